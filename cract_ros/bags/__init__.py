"""Recorded input and scoring on it: rosbag2 files and folder sequences, replayed through the node.

- bag_io:   rosbag2 files written and read with `rosbags` (no rclpy)
- bag_eval: `cract-bag`: sequences to bags, lock-step / real-time evaluation of bags
- replay:   real-time replay through the tracker node (a camera that plays recorded frames)
- sequence: folder sequences (img/*.jpg + groundtruth.txt) and their stamps
"""
