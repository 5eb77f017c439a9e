"""An example of a robot's own launch file that starts cract as one part of its stack: copy it
into your bringup package and change the names.

    ros2 launch cract example_robot.launch.py
    ros2 launch cract example_robot.launch.py robot:=drone2 camera:=down_camera autostart:=false

It includes cract's launch/cract.launch.py (found with FindPackageShare, so it works from any
workspace that has cract installed or sourced) in the robot's namespace, with the node's camera
topics pointed at the robot's camera and a params file of the robot's own. The tracker then is
/<robot>/cract_tracker, and publishes /<robot>/cract_tracker/tracked_object.

With autostart:=false it waits unconfigured for a lifecycle manager (docs/robot_stack.md shows
Nav2's lifecycle_manager set up for it). test/test_colcon_workspace.py runs this file.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    robot = LaunchConfiguration("robot")
    camera = LaunchConfiguration("camera")
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="robot1", description="the robot's namespace"),
        DeclareLaunchArgument("camera", default_value="front_camera",
                              description="the camera driver's namespace inside the robot's"),
        DeclareLaunchArgument("tracker_params_file",
                              # your bringup package would keep its own copy: FindPackageShare("my_robot_bringup")
                              default_value=PathJoinSubstitution([FindPackageShare("cract"), "config", "cract.yaml"]),
                              description="ros__parameters of the tracker"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="false: a lifecycle manager configures and activates the tracker"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("cract"), "launch", "cract.launch.py"])),
            launch_arguments={
                "namespace": robot,
                # relative names resolve in the robot's namespace: /<robot>/<camera>/image_raw
                "image_topic": [camera, "/image_raw"],
                "camera_info_topic": [camera, "/camera_info"],
                "params_file": LaunchConfiguration("tracker_params_file"),
                "autostart": LaunchConfiguration("autostart"),
            }.items(),
        ),
    ])
