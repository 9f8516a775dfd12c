"""The segmentation node's parameters: the table, their checks and the parameter file (pure Python).

Everything here is importable without ROS, so the training side (which reads the node's
``sign_class`` / ``min_sign_area`` from config/hiseg.yaml) and the tests read the same table the
node declares. The node (``hiseg_ros.node``) turns each :class:`Param` into a declared parameter
with a ``ParameterDescriptor`` (type, range, choices in the description, read-only unless
``dynamic``) and refuses to start (exit code 2) on any message :func:`problems` returns.

The parameter file is keyed ``/**`` (every node), so a renamed or namespaced node (``-r __node:=``,
``-r __ns:=``, several cameras) still reads it: :func:`read_params_file`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from .engines import BACKENDS, PRECISIONS, InputConstraints, InputShapeError
from .engines.bindings import ShapeProfile
from .engines.select import parse_device
from .imaging import DEFAULT_MAX_PIXELS
from .outputs import OUTPUTS, SIGN_SPLITS

__all__ = [
    "EXIT_MODEL_ERROR",
    "EXIT_PARAMETER_ERROR",
    "PARAMETERS",
    "PARAMS_FILE_KEY",
    "ConfigurationError",
    "Param",
    "check_value",
    "effective_parameters",
    "input_problem",
    "problems",
    "read_params_file",
    "shape_profile",
]

RESIZE_POLICIES = ("none", "fit")
RESOLUTIONS = ("input", "network")
CONFIDENCE_ENCODINGS = ("mono8", "32FC1")
RELIABILITIES = ("best_effort", "reliable")
EXIT_MODEL_ERROR = 1
EXIT_PARAMETER_ERROR = 2
PARAMS_FILE_KEY = "/**"
"""Top-level key of config/hiseg.yaml: the parameters apply to the node whatever its name / namespace."""


class ConfigurationError(Exception):
    """A start-up problem; ``exit_code`` tells main() what to return."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    dynamic: bool = False


#: Every parameter of the node (also read by the tests to check config/hiseg.yaml and the launch file).
PARAMETERS: tuple[Param, ...] = (
    Param("model_path", "", "Exported model (.onnx, or .pt for the torch backend; required)"),
    Param("hierarchy_path", "", "Optional hierarchy YAML that must match the model's embedded hierarchy"),
    Param(
        "backend",
        "auto",
        "Inference backend; auto = TensorRT when it and its dependencies import, else ONNX Runtime",
        BACKENDS,
    ),
    Param(
        "device",
        "auto",
        "Where to infer: auto | cpu | cuda | cuda:N (TensorRT and ONNX Runtime's GPU providers: the GPU id; "
        "torch: the torch device; auto = GPU 0 where a backend uses one)",
    ),
    Param("precision", "fp16", "TensorRT precision (ignored by other backends)", PRECISIONS),
    Param("engine_cache_dir", "", "Directory of cached TensorRT engines ('' = the engine's default)"),
    Param("int8_calibration_dir", "", "Folder of calibration images for precision int8"),
    Param(
        "camera.width",
        0,
        "Width of the camera images (0 = unknown): the TensorRT shape profile is built for it",
        int_range=(0, 16384),
    ),
    Param(
        "camera.height",
        0,
        "Height of the camera images (0 = unknown: TensorRT's default profile, at most 1024x2048)",
        int_range=(0, 16384),
    ),
    Param(
        "cpu_spin_wait",
        False,
        "ONNX Runtime CPU threads busy-wait between frames (faster alone; false leaves the cores to DDS and outputs)",
    ),
    Param(
        "memory.retain_freed",
        True,
        "Keep freed image buffers mapped for reuse (glibc malloc thresholds raised): no page faults per "
        "frame; the process keeps its peak heap",
    ),
    Param("resize.policy", "none", "none: infer at input size; fit: scale keeping aspect + pad", RESIZE_POLICIES),
    Param("resize.width", 1024, "Network input width for resize.policy fit", int_range=(16, 16384)),
    Param("resize.height", 512, "Network input height for resize.policy fit", int_range=(16, 16384)),
    Param("input_qos.depth", 1, "History depth of the image subscription", int_range=(1, 100)),
    Param("input_qos.reliability", "best_effort", "Reliability of the image subscription", RELIABILITIES),
    Param("output_qos.depth", 1, "History depth of the output publishers", int_range=(1, 100)),
    Param("output_qos.reliability", "reliable", "Reliability of the output publishers", RELIABILITIES),
    Param("outputs", list(OUTPUTS), f"Outputs to publish, any of {', '.join(OUTPUTS)}"),
    Param(
        "output.resolution",
        "input",
        "Size of the image outputs: input = the camera image's; network = the size the network ran at "
        "(with resize.policy fit: the fitted image without its padding; less bandwidth), sign boxes in its pixels",
        RESOLUTIONS,
    ),
    Param(
        "output.compressed_format",
        "jpeg",
        "Format of ~/colored/compressed (sensor_msgs/CompressedImage, published only when subscribed)",
        ("jpeg", "png"),
    ),
    Param("output.jpeg_quality", 80, "JPEG quality of ~/colored/compressed", int_range=(1, 100), dynamic=True),
    Param(
        "confidence.encoding",
        "mono8",
        "~/confidence encoding: mono8 = round(255 * probability), 32FC1 = the probability (0..1)",
        CONFIDENCE_ENCODINGS,
    ),
    Param(
        "confidence.threshold",
        0.0,
        "Pixels whose chosen leaf has a lower probability are unlabeled (void) in every output; "
        "LabelInfo.threshold carries it (0 = every pixel keeps its decision)",
        float_range=(0.0, 1.0),
    ),
    Param("overlay_alpha", 0.5, "Weight of the colour mask in ~/overlay", float_range=(0.0, 1.0), dynamic=True),
    Param("min_sign_area", 16, "Smallest traffic-sign region in pixels", int_range=(1, 1 << 30), dynamic=True),
    Param(
        "sign_split",
        "leaf",
        "How ~/traffic_signs cuts sign pixels into instances: leaf = one per sign class within a touching "
        "region (stacked signs apart), region = one per touching region, class = its majority",
        SIGN_SPLITS,
        dynamic=True,
    ),
    Param(
        "sign_class",
        "",
        "Override of the traffic-sign class ('' = the classes the model's hierarchy declares traffic_sign: true)",
    ),
    Param(
        "label_remap_path",
        "",
        "Optional label remap table (YAML, e.g. config/label_remaps/driving16.yaml): also publish "
        "~/remapped/mask and ~/remapped/label_info, the leaf map in the table's label space ('' = none)",
    ),
    Param("max_input_pixels", DEFAULT_MAX_PIXELS, "Larger input images are rejected", int_range=(1, 1 << 31)),
    Param(
        "mono16_shift",
        8,
        "16-bit inputs (mono16, rgb16, bgr16): right shift to 8 bit, saturated at 255 (8 = the top byte, "
        "a camera using all 16 bits; 4 = 12-bit data in the low bits)",
        int_range=(0, 15),
    ),
    Param("use_compressed", False, "Subscribe to <image>/compressed (sensor_msgs/CompressedImage) instead"),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages", float_range=(0.1, 60.0)),
    Param(
        "diagnostics.min_frequency",
        5.0,
        "Lowest acceptable input rate in Hz (below: WARN 'Frequency too low.')",
        float_range=(0.0, 1000.0),
    ),
    Param(
        "diagnostics.max_frequency",
        100.0,
        "Highest acceptable input rate in Hz (above: WARN 'Frequency too high.')",
        float_range=(0.0, 1000.0),
    ),
    Param(
        "diagnostics.tolerance",
        0.1,
        "Relative tolerance of the frequency bounds (diagnostic_updater's FrequencyStatus tolerance)",
        float_range=(0.0, 1.0),
    ),
    Param(
        "diagnostics.window_size",
        5,
        "Frequency window in diagnostics periods (diagnostic_updater's window_size)",
        int_range=(1, 100),
    ),
    Param(
        "diagnostics.stale_warn_s",
        2.0,
        "No input frame for this many seconds: WARN (input stale)",
        float_range=(0.01, 3600.0),
    ),
    Param(
        "diagnostics.stale_error_s",
        5.0,
        "No input frame for this many seconds: ERROR (input stale)",
        float_range=(0.01, 3600.0),
    ),
    Param(
        "diagnostics.min_delay_s",
        -1.0,
        "Earliest acceptable header stamp delay in s (negative: stamps from the future; ERROR beyond)",
        float_range=(-3600.0, 3600.0),
    ),
    Param(
        "diagnostics.max_delay_s",
        5.0,
        "Latest acceptable header stamp delay (now - header.stamp) in s (ERROR beyond)",
        float_range=(-3600.0, 1e9),
    ),
)

SPEC: dict[str, Param] = {p.name: p for p in PARAMETERS}


def check_value(p: Param, value: Any) -> str | None:
    """Why ``value`` is invalid for ``p``, or None."""
    if p.choices and value not in p.choices:
        return f"{p.name}: {value!r} is not one of {', '.join(p.choices)}"
    if p.int_range and not p.int_range[0] <= value <= p.int_range[1]:
        return f"{p.name}: {value} is outside [{p.int_range[0]}, {p.int_range[1]}]"
    if p.float_range and not p.float_range[0] <= value <= p.float_range[1]:
        return f"{p.name}: {value} is outside [{p.float_range[0]}, {p.float_range[1]}]"
    return None


def problems(values: Mapping[str, Any]) -> list[str]:
    """Every invalid value of ``values`` (declared name -> value), each message naming its parameter."""
    errors = [why for name, value in values.items() if name in SPEC and (why := check_value(SPEC[name], value))]
    unknown = [o for o in values.get("outputs", ()) if o not in OUTPUTS]
    if unknown:
        errors.append(f"outputs: unknown output(s) {unknown}; expected any of {', '.join(OUTPUTS)}")
    if not values.get("model_path"):
        errors.append("model_path: required (path to the exported model), e.g. -p model_path:=/path/model.onnx")
    if "device" in values:
        try:
            parse_device(values["device"])
        except ValueError as exc:
            errors.append(str(exc))
    if (values.get("camera.width", 0) == 0) != (values.get("camera.height", 0) == 0):
        errors.append("camera.width / camera.height: give both (the camera image size) or neither (0)")
    lo, hi = values.get("diagnostics.min_frequency", 0.0), values.get("diagnostics.max_frequency", 0.0)
    if hi and lo > hi:
        errors.append(f"diagnostics.min_frequency: {lo} is above diagnostics.max_frequency {hi}")
    warn, error = values.get("diagnostics.stale_warn_s", 0.0), values.get("diagnostics.stale_error_s", 0.0)
    if warn > error:
        errors.append(f"diagnostics.stale_warn_s: {warn} is above diagnostics.stale_error_s {error}")
    return errors


def shape_profile(values: Mapping[str, Any]) -> ShapeProfile | None:
    """The TensorRT shape profile the parameters ask for, or None for the engine's default.

    ``resize.policy fit`` feeds the network one fixed size; otherwise ``camera.width`` /
    ``camera.height`` give the camera's size, and the engine is built for exactly that (smaller
    inputs down to the default minimum still run).
    """
    if values.get("resize.policy") == "fit":
        return ShapeProfile.for_size(values["resize.height"], values["resize.width"])
    height, width = values.get("camera.height", 0), values.get("camera.width", 0)
    if height and width:
        return ShapeProfile.for_size(height, width)
    return None


def input_problem(constraints: InputConstraints, height: int, width: int) -> str | None:
    """Why the engine can never take a ``height x width`` network input (None: it can), naming the fix.

    The same size always fails the same way, so the node reports it once instead of per frame.
    """
    try:
        constraints.check(height, width)
    except InputShapeError as exc:
        return (
            f"{exc}: every frame of this size is dropped. Set camera.width / camera.height to the camera's "
            "size (a TensorRT engine is then built for it), or resize.policy fit with resize.width / "
            "resize.height inside the engine's range"
        )
    return None


def read_params_file(path: str | Path) -> dict[str, Any]:
    """The node's parameters in a parameter file (the ``/**`` section), nested names joined by dots."""
    data = yaml.safe_load(Path(path).read_text())
    try:
        section = data[PARAMS_FILE_KEY]["ros__parameters"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: no {PARAMS_FILE_KEY}: ros__parameters: section ({exc})") from None
    return _flatten(section)


def effective_parameters(ros_args: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
    """The values of the node parameters ``names`` that ``ros_args`` give it, as rcl resolves them:
    the declared default, then every ``--params-file`` and ``-p name:=value`` in command-line order,
    the last one naming a parameter winning (rcl combines both kinds into one override table)."""
    values = {name: SPEC[name].default for name in names}
    for flag, value in pairwise(ros_args):
        if flag == "--params-file":
            values.update({k: v for k, v in read_params_file(value).items() if k in values})
        elif flag in ("-p", "--param"):
            name, sep, raw = value.partition(":=")
            if sep and name in values:
                values[name] = yaml.safe_load(raw)
    return values


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
