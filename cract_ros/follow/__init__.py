"""Following a tracked target: the follower node and what closes the loop around it.

- follower: FollowerNode (cract-follower, `ros2 run cract follower_node`): TrackedObject in, a
  velocity command out (Twist / TwistStamped, MAVROS / PX4 frames)
- control:  the follower's control law without ROS (bearings -> yaw rate, vertical, forward)
- sim:      a simulated camera on a moving vehicle over a textured ground (no ROS)
- demo:     the closed loop over DDS: tracker node + follower node + sim (`make follow-demo`)
"""
