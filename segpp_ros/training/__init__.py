"""Training and the offline studies: everything that makes or measures a model away from a robot.

The deterministic synthetic street scenes and person crops (data/), training with exact resume
(train.py), metrics (mIoU, PCK), the fidelity study (accuracy and speed-up per merge preset),
the speed benchmarks of the model and of the pose stage (bench.py, posebench.py), and the
bundled sample sequence (samples.py).

May import segpp_ros.model, segpp_ros.inference and the package data; never ROS and never the
command-line tools.
"""
