"""pip install for users without a ROS workspace, and the editable install of the dev venv.

The ROS package `cract` (package.xml, CMakeLists.txt) builds the msg/srv interfaces; this file
only installs the Python packages cract_core and cract_ros and their console scripts. The
distribution is called `cract-tracker`, not `cract`: rosidl's Python generator installs its
own `cract` package (cract.msg, cract.srv) with egg-info under that name, and pip must never
mistake one for the other (an upgrade of one would uninstall the other's files).
"""
from setuptools import find_packages, setup

setup(
    name="cract-tracker",
    version="0.1.0",
    description="CRACT visual tracker (cascaded regression-align-classification) with a ROS 2 node",
    packages=find_packages(include=["cract_core", "cract_core.*", "cract_ros", "cract_ros.*"]),
    python_requires=">=3.10",
    # Pinned runtime versions live in requirements.txt; these are the loose needs for pip users.
    install_requires=["torch", "torchvision", "numpy", "opencv-contrib-python-headless", "PyYAML"],
    # `pip install .[vot]`: cract-trax and cract-vot (docs/vot.md). attributee 0.1.10 fails to import on
    # Python 3.11, so 0.1.9 is pinned.
    # `pip install .[onnx]`: runtime onnxruntime and cract-export (docs/runtime.md); torch-only users
    # need neither.  On a CUDA / Jetson machine install onnxruntime-gpu instead of onnxruntime.
    extras_require={"vot": ["vot-toolkit==0.9.0", "vot-trax==4.0.2", "attributee==0.1.9"],
                    "onnx": ["onnxruntime", "onnx"]},
    entry_points={
        "console_scripts": [
            # the same entry point CMake installs as lib/cract/tracker_node
            "cract-tracker-node=cract_ros.node:main",
            # TrackedObject -> Twist / TwistStamped for a following vehicle (lib/cract/follower_node in CMake)
            "cract-follower=cract_ros.follow.follower:main",
            # rosbag2: sequences to bags, lock-step / real-time evaluation of bags (cract_ros/bags/bag_eval.py)
            "cract-bag=cract_ros.bags.bag_eval:main",
            # the evaluation toolkit and the training pipeline of cract_core
            "cract-eval=cract_core.eval.cli:main",
            "cract-train=cract_core.train.cli:main",
            # a config's frozen inference parts as ONNX graphs (docs/runtime.md)
            "cract-export=cract_core.runtime.export:main",
            # vot-toolkit: cract as a TraX server, and a workspace from a folder or a split (cract_core/vot/)
            "cract-trax=cract_core.vot.trax_server:main",
            "cract-vot=cract_core.vot.workspace:main",
        ],
    },
)
