"""The node's parameter table (``hiseg_ros.node_params``) declared on an rclpy node.

Both executables (the plain node and the lifecycle node) declare the same parameters the same way:
one ``ParameterDescriptor`` per :class:`~hiseg_ros.node_params.Param` (type, range, choices in the
description, read-only unless ``dynamic``), the values checked by
:func:`~hiseg_ros.node_params.problems`, and one set-parameters callback that refuses an invalid
value of a dynamic parameter and otherwise writes it into the values the frame pipeline reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.node import Node

from .node_params import EXIT_PARAMETER_ERROR, PARAMETERS, SPEC, ConfigurationError, Param, check_value, problems

__all__ = ["declare_parameters", "descriptor", "on_set_parameters"]

_PTYPE = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
    list: ParameterType.PARAMETER_STRING_ARRAY,
}


def descriptor(p: Param) -> ParameterDescriptor:
    """What ``ros2 param describe`` shows for ``p``."""
    desc = p.description + (f" ({'|'.join(p.choices)})" if p.choices else "")
    d = ParameterDescriptor(
        description=desc, type=_PTYPE[type(p.default)], read_only=not p.dynamic, dynamic_typing=False
    )
    if p.int_range:
        d.integer_range = [IntegerRange(from_value=p.int_range[0], to_value=p.int_range[1], step=0)]
    if p.float_range:
        d.floating_point_range = [FloatingPointRange(from_value=p.float_range[0], to_value=p.float_range[1], step=0.0)]
    return d


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every parameter on ``node`` (once per node); raise ConfigurationError (exit 2) naming
    each invalid one. A second call (a lifecycle node configured again) reads the declared values."""
    values: dict[str, Any] = {}
    errors = []
    for p in PARAMETERS:
        try:
            if node.has_parameter(p.name):
                values[p.name] = node.get_parameter(p.name).value
                continue
            param = node.declare_parameter(p.name, p.default, descriptor(p))
        except Exception as exc:  # wrong type / out of range override from the command line or YAML
            errors.append(f"{p.name}: {type(exc).__name__}: {exc}")
            continue
        values[p.name] = param.value
    errors += problems(values)
    if errors:
        raise ConfigurationError("invalid parameters:\n  " + "\n  ".join(errors), EXIT_PARAMETER_ERROR)
    return values


def on_set_parameters(values: dict[str, Any]) -> Callable[[list[Any]], SetParametersResult]:
    """The set-parameters callback: checks dynamic parameters, then updates ``values`` in place."""

    def callback(params: list[Any]) -> SetParametersResult:
        for param in params:
            p = SPEC.get(param.name)
            if p is not None and p.dynamic:
                why = check_value(p, param.value)
                if why:
                    return SetParametersResult(successful=False, reason=why)
        for param in params:
            if param.name in values:
                values[param.name] = param.value
        return SetParametersResult(successful=True)

    return callback
