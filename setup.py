"""pip installation of the segpp_ros Python package (the ROS package build installs it too)."""
from setuptools import find_packages, setup

setup(
    name="segpp",
    version="0.1.0",
    description="SegFormer++ (SegFormer with token merging) semantic segmentation and keypoints for ROS 2",
    license="Apache-2.0",
    packages=find_packages(include=["segpp_ros", "segpp_ros.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.3", "numpy>=1.26", "safetensors>=0.4", "tqdm>=4.60", "opencv-python-headless>=4.8",
                      "rosbags>=0.10", "huggingface_hub>=0.20", "numba>=0.59", "PyYAML>=6", "openvino>=2025.1",
                      "onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"],
    # segpp-fleet: many bags on a Ray cluster (the node and segpp-bag never import Ray)
    extras_require={"fleet": ["ray>=2.60"]},
    package_data={"segpp_ros.weights": ["*.safetensors"], "segpp_ros.samples": ["*.jpg"]},
    entry_points={
        "console_scripts": [
            "segpp-bench = segpp_ros.cli.bench:main",
            "segpp-rosbench = segpp_ros.cli.rosbench:main",
            "segpp-camerabench = segpp_ros.cli.camerabench:main",
            "segpp-convert = segpp_ros.cli.convert:main",
            "segpp-train = segpp_ros.cli.train:main",
            "segpp-fidelity = segpp_ros.cli.fidelity:main",
            "segpp-posebench = segpp_ros.cli.posebench:main",
            "segpp-demo = segpp_ros.cli.demo:main",
            "segpp-offline = segpp_ros.cli.offline:main",
            "segpp-camera = segpp_ros.cli.camera:main",
            "segpp-sink = segpp_ros.cli.sink:main",
            "segpp-node = segpp_ros.cli.node:main",
            "segpp-params = segpp_ros.cli.params:main",
            "segpp-soak = segpp_ros.cli.soak:main",
            "segpp-budget-study = segpp_ros.cli.budgetstudy:main",
            "segpp-bag = segpp_ros.cli.bag:main",
            "segpp-walk = segpp_ros.cli.walk:main",
            "segpp-framebench = segpp_ros.cli.framebench:main",
            "segpp-export = segpp_ros.cli.export:main",
            "segpp-depthbench = segpp_ros.cli.depthbench:main",
            "segpp-fleet = segpp_ros.cli.fleet:main",
            "segpp-fleetbench = segpp_ros.cli.fleetbench:main",
        ],
    },
)
