"""launch/hiseg.launch.py, read with ``ast`` (launch_ros cannot be imported here), against the command
line training/evaluation/bags/node_process.launch_ros_args builds for tests, the benchmark and the
live bag evaluation.

``_launch_command`` replays what launch_ros does with the file's ``Node`` for given launch argument
values (ros_arguments, then the node name, namespace, parameter file, parameter overrides and
remappings), so a launch argument added to one side only fails here.
"""

from __future__ import annotations

import ast
import re

import pytest

from hiseg_ros import node as node_module
from hiseg_ros.node_params import effective_parameters
from training import REPO
from training.evaluation.bags import node_process

LAUNCH = REPO / "launch" / "hiseg.launch.py"
PARAMS = REPO / "config" / "hiseg.yaml"
ROS_OWN_PARAMETERS = {"use_sim_time"}  # declared by rclpy itself, not in the node's table


def _call_name(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


def _kwargs(call: ast.Call) -> dict[str, ast.AST]:
    return {k.arg: k.value for k in call.keywords if k.arg}


def _tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text())


def _calls(name: str) -> list[ast.Call]:
    return [n for n in ast.walk(_tree()) if isinstance(n, ast.Call) and _call_name(n) == name]


def _arguments() -> dict[str, dict[str, object]]:
    """DeclareLaunchArgument name -> {"default": source text or None (required), "choices": list or None}."""
    out = {}
    for call in _calls("DeclareLaunchArgument"):
        kw = _kwargs(call)
        default = kw.get("default_value")
        out[ast.literal_eval(call.args[0])] = {
            "default": None if default is None else ast.unparse(default),
            "choices": ast.literal_eval(kw["choices"]) if "choices" in kw else None,
        }
    return out


def _configurations() -> dict[str, str]:
    """Variable name -> the launch argument it holds (``x = LaunchConfiguration("x")``)."""
    out = {}
    for node in ast.walk(_tree()):
        call = node.value if isinstance(node, ast.Assign) else None
        if isinstance(call, ast.Call) and _call_name(call) == "LaunchConfiguration":
            out[node.targets[0].id] = ast.literal_eval(node.value.args[0])
    return out


def _nodes() -> dict[str, dict[str, ast.AST]]:
    return {ast.literal_eval(_kwargs(c)["package"]): _kwargs(c) for c in _calls("Node")}


def _evaluate(expr: ast.AST, values: dict[str, str]):
    """A launch expression with each LaunchConfiguration replaced by its value."""
    if isinstance(expr, ast.Name):
        return values[_configurations()[expr.id]]
    if isinstance(expr, ast.List | ast.Tuple):
        return [_evaluate(e, values) for e in expr.elts]
    if isinstance(expr, ast.Dict):
        return {ast.literal_eval(k): _evaluate(v, values) for k, v in zip(expr.keys, expr.values, strict=True)}
    return ast.literal_eval(expr)


def _launch_command(values: dict[str, str]) -> list[str]:
    """The ``--ros-args`` launch_ros gives the hiseg_ros node for these launch argument values."""
    args = {name: spec["default"] for name, spec in _arguments().items()}
    assert "hiseg.yaml" in args["params_file"]  # the package's copy of config/hiseg.yaml
    defaults = {"params_file": str(PARAMS), "rviz_config": "hiseg.rviz"}
    defaults |= {k: ast.literal_eval(v) for k, v in args.items() if k not in defaults and v is not None}
    values = {**defaults, **values}
    kw = _nodes()["hiseg_ros"]
    ros = list(_evaluate(kw.get("ros_arguments", ast.List(elts=[])), values))
    ros += ["-r", f"__node:={ast.literal_eval(kw['name'])}"]
    namespace = _evaluate(kw["namespace"], values) if "namespace" in kw else ""
    if namespace:
        ros += ["-r", f"__ns:=/{namespace.lstrip('/')}"]  # launch_ros makes the namespace absolute
    for item in _evaluate(kw["parameters"], values):
        if isinstance(item, dict):
            ros += [x for key, value in item.items() for x in ("-p", f"{key}:={value}")]
        else:
            ros += ["--params-file", item]
    for src, dst in _evaluate(kw["remappings"], values):
        ros += ["-r", f"{src}:={dst}"]
    return ros


@pytest.mark.parametrize(
    ("values", "kwargs"),
    [
        ({}, {}),
        ({"use_compressed": "true"}, {"compressed": True}),
        (
            {"namespace": "front", "image": "image_raw", "use_sim_time": "true", "log_level": "debug"},
            {"namespace": "front", "use_sim_time": True, "log_level": "debug"},
        ),
        (
            {"namespace": "/rear/left", "params_file": "/tmp/p.yaml"},
            {"namespace": "/rear/left", "params_file": "/tmp/p.yaml"},
        ),
    ],
)
def test_launcher_gives_the_node_the_launch_files_command_line(values, kwargs, tmp_path):
    """Tests, the benchmark and the live bag evaluation start the node with node_process.launch_ros_args."""
    model = tmp_path / "m.onnx"
    image = values.get("image", "/cam/image")
    expected = _launch_command({"model_path": str(model), "image": image, **values})
    assert node_process.launch_ros_args(model, image, **kwargs) == expected
    extra = ["-p", "backend:=onnxruntime"]
    assert node_process.launch_ros_args(model, image, extra=extra, **kwargs) == [*expected, *extra]


def test_launcher_defaults_and_extra_items():
    args = node_process.launch_ros_args("m.onnx", "/cam/image", None, node_name="other")
    assert args[:4] == ["--log-level", "info", "-r", "__node:=other"] and "--params-file" not in args
    assert node_process.PARAMS_FILE == PARAMS
    assert node_process.node_command(["-r", "x:=y"])[1:] == ["-m", "hiseg_ros.node", "--ros-args", "-r", "x:=y"]


def test_effective_parameters_resolve_as_rcl_the_last_item_winning(tmp_path):
    names = ("sign_split", "min_sign_area", "overlay_alpha")
    assert effective_parameters([], names) == {
        "sign_split": "leaf",
        "min_sign_area": 16,
        "overlay_alpha": 0.5,
    }
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    sign_split: region\n    min_sign_area: 40\n")
    args = ["-p", "min_sign_area:=25", "--params-file", str(params), "-p", "other:=1", "-p", "overlay_alpha:=0.2"]
    # the last item naming a parameter wins (here the file over the first -p); unnamed ones are not read
    assert effective_parameters(args, names) == {
        "sign_split": "region",
        "min_sign_area": 40,
        "overlay_alpha": 0.2,
    }
    launched = node_process.launch_ros_args("m.onnx", "/cam", params, extra=["-p", "sign_split:=leaf"])
    assert effective_parameters(launched, names[:2]) == {"sign_split": "leaf", "min_sign_area": 40}


def test_launch_arguments_for_a_multi_camera_vehicle():
    args = _arguments()
    assert set(args) == {
        "namespace",
        "model_path",
        "image",
        "use_compressed",
        "use_sim_time",
        "log_level",
        "params_file",
        "bag",
        "rviz",
        "rviz_config",
    }
    assert args["model_path"]["default"] is None, "model_path is a required launch argument"
    assert args["namespace"]["default"] == "''" and args["bag"]["default"] == "''"
    for flag in ("use_compressed", "use_sim_time"):
        assert args[flag] == {"default": "'false'", "choices": ["true", "false"]}, flag
    assert args["log_level"]["default"] == "'info'" and "debug" in args["log_level"]["choices"]
    assert "config" in args["params_file"]["default"] and "hiseg.yaml" in args["params_file"]["default"]
    assert "hiseg.rviz" in args["rviz_config"]["default"]
    # every declared launch argument is read, and every read one declared
    assert set(_configurations().values()) == set(args)


def _console_scripts() -> dict[str, str]:
    text = (REPO / "setup.py").read_text()
    return dict(re.findall(r'"(\w+)\s*=\s*([\w.]+:\w+)"', text))


def test_launch_file_starts_the_real_executable_with_real_parameters():
    kw = _nodes()["hiseg_ros"]
    assert _console_scripts()[ast.literal_eval(kw["executable"])] == "hiseg_ros.node:main"
    assert ast.literal_eval(kw["name"]) == node_module.NODE_NAME
    overrides = [k for d in _evaluate(kw["parameters"], _all_named()) if isinstance(d, dict) for k in d]
    assert overrides == ["model_path", "use_compressed", "use_sim_time"]
    declared = {p.name for p in node_module.PARAMETERS} | ROS_OWN_PARAMETERS
    assert set(overrides) <= declared


def _all_named() -> dict[str, str]:
    return {arg: arg for arg in _configurations().values()}


def test_bag_plays_with_its_clock_and_rviz_behind_their_conditions():
    (bag,) = _calls("ExecuteProcess")
    cmd = _evaluate(_kwargs(bag)["cmd"], _all_named())
    assert cmd == ["ros2", "bag", "play", "bag", "--loop", "--clock"]
    assert "condition" in _kwargs(bag)
    rviz = _nodes()["rviz2"]
    assert "condition" in rviz and _evaluate(rviz["arguments"], _all_named()) == ["-d", "rviz_config"]
