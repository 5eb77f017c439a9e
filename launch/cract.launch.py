"""Start the cract tracker node (a lifecycle node) with config/cract.yaml.

    ros2 launch cract cract.launch.py
    ros2 launch cract cract.launch.py namespace:=drone1 image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info
    ros2 launch cract cract.launch.py params_file:=/path/to/my.yaml use_sim_time:=true
    ros2 launch cract cract.launch.py autostart:=false   # a lifecycle manager (Nav2's) drives it

With autostart (the default) the node configures (loads the model) and activates itself; with
autostart:=false it waits unconfigured for `ros2 lifecycle set /cract_tracker configure` or a
lifecycle manager that lists it in its node_names.

Written for a real ROS 2 install (Humble, Jazzy, Kilted): launch and launch_ros are not on PyPI,
so the development venv starts the node the same way by hand:
    tracker_node --ros-args --params-file config/cract.yaml -r image:=/camera/image_raw
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    image_topic = LaunchConfiguration("image_topic")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="camera topic (sensor_msgs/Image; its /compressed sibling for "
                                          "image_transport: compressed)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="the camera's sensor_msgs/CameraInfo (bearings in TrackedObject)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("cract"), "config", "cract.yaml"]),
                              description="ros__parameters file of the node"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate at once (false: wait for a lifecycle manager)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
        LifecycleNode(
            package="cract",
            executable="tracker_node",
            name="cract_tracker",
            namespace=LaunchConfiguration("namespace"),
            parameters=[
                LaunchConfiguration("params_file"),
                {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                 "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool)},
            ],
            # the node subscribes to `image` (or `image/compressed`) and `camera_info`: point them at the camera
            remappings=[("image", image_topic), ("image/compressed", [image_topic, "/compressed"]),
                        ("camera_info", LaunchConfiguration("camera_info_topic"))],
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
            output="screen",
            emulate_tty=True,
        ),
    ])
