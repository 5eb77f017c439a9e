"""launch/cract.launch.py and launch/follow.launch.py, read: they must parse, start the executables
that CMakeLists.txt installs to lib/cract/, and pass the params files that CMake installs to
share/cract/config/ and the node tests use (config/cract.yaml, config/follower.yaml), whose keys
must be exactly the nodes' declared parameters (test_follower_node.py checks the follower's file).

test_colcon_workspace.py runs them for real (colcon build, ros2 launch); this file says quickly,
without a build, which part of a launch file broke.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "cract.launch.py"
FOLLOW_LAUNCH = ROOT / "launch" / "follow.launch.py"
PARAMS = ROOT / "config" / "cract.yaml"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and ((isinstance(n.func, ast.Name) and n.func.id == name)
                 or (isinstance(n.func, ast.Attribute) and n.func.attr == name))]


def _kw(call: ast.Call, key: str) -> ast.AST:
    for k in call.keywords:
        if k.arg == key:
            return k.value
    raise AssertionError(f"{key}= missing in {ast.unparse(call)[:80]}...")


def _installed_programs() -> dict[str, Path]:
    """Executable name -> script, for every scripts/<name> that CMakeLists.txt's foreach(program ...)
    installs to lib/${PROJECT_NAME} (with the building interpreter in its first line)."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(cract\)", cmake, re.M)
    loop = re.search(r"foreach\(program ([^)]+)\)(.*?)endforeach\(\)", cmake, re.S)
    assert loop, "CMakeLists.txt must install the node scripts to lib/${PROJECT_NAME}"
    assert "scripts/${program}" in loop.group(2) and "DESTINATION lib/${PROJECT_NAME}" in loop.group(2)
    return {name: ROOT / "scripts" / name for name in loop.group(1).split()}


def _args(tree: ast.AST) -> dict[str, ast.Call]:
    return {ast.literal_eval(c.args[0]): c for c in _calls(tree, "DeclareLaunchArgument")}


def _share_path(call: ast.Call) -> list[str]:
    """PathJoinSubstitution([FindPackageShare('cract'), 'a', 'b']) -> ['a', 'b']"""
    default = _kw(call, "default_value")
    assert ast.unparse(default.args[0].elts[0]) == "FindPackageShare('cract')"
    return [ast.literal_eval(e) for e in default.args[0].elts[1:]]


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


@pytest.fixture(scope="module")
def follow_tree() -> ast.Module:
    return ast.parse(FOLLOW_LAUNCH.read_text(), filename=str(FOLLOW_LAUNCH))


def test_launch_file_parses_and_defines_generate_launch_description(tree: ast.Module) -> None:
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in names
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"LaunchDescription", "LifecycleNode", "DeclareLaunchArgument"} <= imported


def test_node_is_the_executable_cmake_installs(tree: ast.Module) -> None:
    nodes = _calls(tree, "LifecycleNode")  # a managed node: launch can drive its transitions
    assert len(nodes) == 1 and not _calls(tree, "Node")
    node = nodes[0]
    assert ast.literal_eval(_kw(node, "package")) == "cract"
    assert ast.literal_eval(_kw(node, "name")) == "cract_tracker"
    executable = ast.literal_eval(_kw(node, "executable"))
    script = _installed_programs()[executable]
    assert script.is_file() and script.stat().st_mode & 0o111, f"{script} must exist and be executable"
    assert "from cract_ros.node import main" in script.read_text()
    # setup.py gives pip users the same entry point
    assert "cract_ros.node:main" in (ROOT / "setup.py").read_text()


def test_launch_passes_the_installed_params_file_and_remaps_the_camera(tree: ast.Module) -> None:
    args = _args(tree)
    assert {"namespace", "image_topic", "camera_info_topic", "params_file", "use_sim_time", "autostart"} <= set(args)
    assert _share_path(args["params_file"]) == ["config", "cract.yaml"]
    assert ast.literal_eval(_kw(args["autostart"], "default_value")) == "true"  # ros2 launch tracks at once
    # CMake installs config/ to share/cract/, so share/cract/config/cract.yaml is this repository's file
    assert re.search(r"foreach\(dir launch config models\)", (ROOT / "CMakeLists.txt").read_text())
    assert PARAMS.is_file()
    node = _calls(tree, "LifecycleNode")[0]
    params = ast.unparse(_kw(node, "parameters"))
    assert "LaunchConfiguration('params_file')" in params and "'autostart'" in params
    assert ast.unparse(_kw(node, "namespace")) == "LaunchConfiguration('namespace')"
    remaps = ast.unparse(_kw(node, "remappings"))
    assert "('image', image_topic)" in remaps
    assert "('camera_info', LaunchConfiguration('camera_info_topic'))" in remaps


def test_params_file_keys_are_exactly_the_node_parameters() -> None:
    from cract_ros.node import PARAMETERS

    data = yaml.safe_load(PARAMS.read_text())
    assert list(data) == ["/**"]
    params = data["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS), (
        f"only in config/cract.yaml: {sorted(set(params) - set(PARAMETERS))}; "
        f"only in the node: {sorted(set(PARAMETERS) - set(params))}")
    for name, value in params.items():
        spec = PARAMETERS[name]
        assert type(value) is type(spec.default), f"{name}: {value!r} is not a {type(spec.default).__name__}"
        assert spec.check(name, value) is None
        assert value == spec.default, f"{name}: the file and the node's default disagree ({value!r} vs {spec.default!r})"


def test_follow_launch_starts_tracker_and_follower_in_one_namespace(follow_tree: ast.Module) -> None:
    names = [n.name for n in follow_tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in names
    args = _args(follow_tree)
    assert {"namespace", "image_topic", "camera_info_topic", "cmd_vel_topic", "tracker_params_file",
            "follower_params_file", "autostart", "use_sim_time"} <= set(args)
    assert _share_path(args["follower_params_file"]) == ["config", "follower.yaml"]
    assert _share_path(args["tracker_params_file"]) == ["config", "cract.yaml"]
    assert (ROOT / "config" / "follower.yaml").is_file()
    # the tracker: cract.launch.py included, with the same namespace and the camera topics
    include = _calls(follow_tree, "IncludeLaunchDescription")
    assert len(include) == 1
    source = ast.unparse(include[0].args[0])
    assert "FindPackageShare('cract'), 'launch', 'cract.launch.py'" in source
    passed = ast.unparse(_kw(include[0], "launch_arguments"))
    for arg in ("namespace", "image_topic", "camera_info_topic", "autostart"):
        assert f"'{arg}':" in passed, arg
    assert "'params_file': LaunchConfiguration('tracker_params_file')" in passed
    # the follower: the executable CMake installs, in the same namespace, its Twist remapped
    nodes = _calls(follow_tree, "Node")
    assert len(nodes) == 1
    follower = nodes[0]
    executable = ast.literal_eval(_kw(follower, "executable"))
    script = _installed_programs()[executable]
    assert script.is_file() and script.stat().st_mode & 0o111
    assert "from cract_ros.follow.follower import main" in script.read_text()
    assert "cract-follower=cract_ros.follow.follower:main" in (ROOT / "setup.py").read_text()
    assert ast.unparse(_kw(follower, "namespace")) == "namespace"
    assert "LaunchConfiguration('follower_params_file')" in ast.unparse(_kw(follower, "parameters"))
    remaps = ast.unparse(_kw(follower, "remappings"))
    assert "('cmd_vel', cmd_vel)" in remaps and "('cmd_vel_stamped', [cmd_vel, '_stamped'])" in remaps
    # the follower listens where the tracker publishes: <namespace>/cract_tracker/tracked_object
    from cract_ros.follow.follower import PARAMETERS

    assert PARAMETERS["tracked_object_topic"].default == "cract_tracker/tracked_object"
