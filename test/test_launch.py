"""launch/cract.launch.py, checked as far as this machine allows.

launch and launch_ros are not installable here (not on PyPI), so the file is read, not run:
it must parse, start the executable that CMakeLists.txt installs to lib/cract/, and pass the
params file that CMake installs to share/cract/config/ and the node tests use
(config/cract.yaml), whose keys must be exactly the node's declared parameters.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "cract.launch.py"
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


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def test_launch_file_parses_and_defines_generate_launch_description(tree: ast.Module) -> None:
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in names
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"LaunchDescription", "Node", "DeclareLaunchArgument"} <= imported


def test_node_is_the_executable_cmake_installs(tree: ast.Module) -> None:
    nodes = _calls(tree, "Node")
    assert len(nodes) == 1
    node = nodes[0]
    assert ast.literal_eval(_kw(node, "package")) == "cract"
    executable = ast.literal_eval(_kw(node, "executable"))
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(cract\)", cmake, re.M)
    m = re.search(r"install\(PROGRAMS\s+(\S+)\s+DESTINATION\s+lib/\$\{PROJECT_NAME\}\)", cmake)
    assert m, "CMakeLists.txt must install the node script to lib/${PROJECT_NAME}"
    script = ROOT / m.group(1)
    assert script.name == executable
    assert script.is_file() and script.stat().st_mode & 0o111, f"{script} must exist and be executable"
    assert "from cract_ros.node import main" in script.read_text()
    # setup.py gives pip users the same entry point
    assert "cract_ros.node:main" in (ROOT / "setup.py").read_text()


def test_launch_passes_the_installed_params_file_and_remaps_the_image(tree: ast.Module) -> None:
    args = {ast.literal_eval(c.args[0]): c for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"namespace", "image_topic", "params_file", "use_sim_time"} <= set(args)
    default = _kw(args["params_file"], "default_value")
    parts = [ast.literal_eval(e) for e in default.args[0].elts[1:]]  # PathJoinSubstitution([FindPackageShare, ...])
    assert ast.unparse(default.args[0].elts[0]) == "FindPackageShare('cract')"
    assert parts == ["config", "cract.yaml"]
    # CMake installs config/ to share/cract/, so share/cract/config/cract.yaml is this repository's file
    assert re.search(r"foreach\(dir launch config models\)", (ROOT / "CMakeLists.txt").read_text())
    assert PARAMS.is_file()
    node = _calls(tree, "Node")[0]
    params = ast.unparse(_kw(node, "parameters"))
    assert "LaunchConfiguration('params_file')" in params
    assert ast.unparse(_kw(node, "namespace")) == "LaunchConfiguration('namespace')"
    remaps = ast.unparse(_kw(node, "remappings"))
    assert "('image', image_topic)" in remaps


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
