"""cract_ros: the ROS 2 shell over cract_core (node, image conversions, bag tools).

Importing this package imports no ROS module; each submodule imports what it needs, so that
cract_ros.conversions' pure-numpy paths stay usable in tools that have no rclpy.
"""
