"""cract_ros: the ROS 2 shell over cract_core, in rooms:

- node/:   the product, the tracker node (TrackerNode, `cract-tracker-node`, `ros2 run cract tracker_node`)
- follow/: the follower node, its control law, the closed-loop simulator and its demo
- bags/:   rosbag2 files and folder sequences, replayed through the node and scored (`cract-bag`)
- tools/:  whole-node runs for people and CI: the demo (`make demo`) and the soak
- shared by the rooms: conversions (messages <-> numpy), parameters (declared, validated ROS
  parameters), process (start / stop the node as its own process, as the launch file does)
- demo.py and follow_demo.py are aliases of the old `python -m` paths (tools.demo, follow.demo).

Importing this package imports no ROS module; each submodule imports what it needs, so that
cract_ros.conversions' pure-numpy paths stay usable in tools that have no rclpy.
"""
