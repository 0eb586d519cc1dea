"""Measuring and test tools that drive the node from outside, as a ROS graph: above segpp_ros.ros.

graph.py: the node as a process with a probe node (the driver of the ROS tests and benchmarks);
camera.py and sink.py: the demo's camera and sink nodes; rosbench.py: end-to-end latency through
ROS (segpp-rosbench); soak.py: a long run with size cycling, restarts and parameter changes
(segpp-soak); camerabench.py: several cameras batched vs one at a time (segpp-camerabench);
budget_study.py: the node under switched CPU load (segpp-budget-study); faults.py: fault
injection, reaching the node through its one seam (PipelineHooks).

May import segpp_ros.model, inference and ros; never training, bags or the command-line tools.
None of this runs inside the node unless its tests ask for fault injection.
"""
