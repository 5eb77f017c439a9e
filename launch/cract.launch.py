"""Start the cract tracker node (a lifecycle node) with config/cract.yaml.

    ros2 launch cract cract.launch.py
    ros2 launch cract cract.launch.py namespace:=drone1 image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info
    ros2 launch cract cract.launch.py params_file:=/path/to/my.yaml use_sim_time:=true
    ros2 launch cract cract.launch.py autostart:=false   # a lifecycle manager (Nav2's) drives it

With autostart (the default) the node configures (loads the model) and activates itself; with
autostart:=false it waits unconfigured for `ros2 lifecycle set /cract_tracker configure` or a
lifecycle manager that lists it in its node_names.

Bad input stops the launch with a non-zero exit status: a params_file that does not exist (before
the node starts), and a node that exits with an error (a model that does not load under autostart,
bad parameters). Include this file from your own launch file: launch/example_robot.launch.py.
test/test_colcon_workspace.py runs all of it from a colcon workspace.
"""
import os

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


class LaunchInputError(RuntimeError):
    """Raised from the launch: `ros2 launch` logs it and exits with status 1."""


def _check_params_file(context: LaunchContext) -> list:
    path = LaunchConfiguration("params_file").perform(context)
    if not os.path.isfile(path):
        raise LaunchInputError(f"params_file {path!r} does not exist (params_file:=<a ros__parameters "
                               f"YAML file>, e.g. a copy of share/cract/config/cract.yaml)")
    return []


def _on_tracker_exit(event: ProcessExited, context: LaunchContext) -> None:
    # exit 0 is the shutdown transition; while the launch itself shuts down, a signal's code is no error
    if event.returncode != 0 and not context.is_shutdown:
        raise LaunchInputError(f"{event.action.name} exited with code {event.returncode}: the tracker could "
                               f"not start or failed (its log above says why)")


def generate_launch_description() -> LaunchDescription:
    image_topic = LaunchConfiguration("image_topic")
    tracker = LifecycleNode(
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
    )
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
        OpaqueFunction(function=_check_params_file),
        RegisterEventHandler(OnProcessExit(target_action=tracker, on_exit=_on_tracker_exit)),
        tracker,
    ])
