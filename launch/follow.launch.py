"""Follow a target with a drone: the cract tracker and the follower, in one namespace.

    ros2 launch cract follow.launch.py namespace:=drone1 image_topic:=/drone1/camera/image_raw \
        camera_info_topic:=/drone1/camera/camera_info cmd_vel_topic:=/drone1/follow/cmd_vel

The tracker (cract.launch.py, config/cract.yaml, a lifecycle node that activates itself unless
autostart:=false) publishes <namespace>/cract_tracker/tracked_object; the follower
(config/follower.yaml) turns it into geometry_msgs/Twist on cmd_vel_topic and TwistStamped on
<cmd_vel_topic>_stamped. Set the target with `ros2 service call
/<namespace>/cract_tracker/set_target cract/srv/SetTarget ...` or a detector on ~/target. Feed
the Twist to the flight stack through your own bridge or mux (README: "Following a target").

The same without launch:
    ros2 run cract tracker_node --ros-args --params-file config/cract.yaml -r __ns:=/drone1 -r image:=... -r camera_info:=...
    ros2 run cract follower_node --ros-args --params-file config/follower.yaml -r __ns:=/drone1
test/test_colcon_workspace.py runs this file from a colcon workspace.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    namespace = LaunchConfiguration("namespace")
    cmd_vel = LaunchConfiguration("cmd_vel_topic")
    use_sim_time = LaunchConfiguration("use_sim_time")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="drone1", description="namespace of both nodes"),
        DeclareLaunchArgument("image_topic", default_value="camera/image_raw", description="camera topic"),
        DeclareLaunchArgument("camera_info_topic", default_value="camera/camera_info",
                              description="the camera's CameraInfo (bearings; without it use error_source: offset)"),
        DeclareLaunchArgument("cmd_vel_topic", default_value="cmd_vel", description="the follower's Twist output"),
        DeclareLaunchArgument("tracker_params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("cract"), "config", "cract.yaml"]),
                              description="ros__parameters of the tracker"),
        DeclareLaunchArgument("follower_params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("cract"), "config", "follower.yaml"]),
                              description="ros__parameters of the follower (gains, limits, safety)"),
        DeclareLaunchArgument("autostart", default_value="true", description="the tracker activates itself"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("cract"), "launch", "cract.launch.py"])),
            launch_arguments={
                "namespace": namespace,
                "image_topic": LaunchConfiguration("image_topic"),
                "camera_info_topic": LaunchConfiguration("camera_info_topic"),
                "params_file": LaunchConfiguration("tracker_params_file"),
                "autostart": LaunchConfiguration("autostart"),
                "use_sim_time": use_sim_time,
            }.items(),
        ),
        Node(
            package="cract",
            executable="follower_node",
            name="cract_follower",
            namespace=namespace,
            parameters=[LaunchConfiguration("follower_params_file"),
                        {"use_sim_time": ParameterValue(use_sim_time, value_type=bool)}],
            remappings=[("cmd_vel", cmd_vel), ("cmd_vel_stamped", [cmd_vel, "_stamped"])],
            output="screen",
            emulate_tty=True,
        ),
    ])
