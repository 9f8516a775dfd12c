"""Shape, dtype and buffer bookkeeping of the TensorRT backend (pure Python: testable on the CPU).

* :class:`ShapeProfile`: the optimisation profile (min / opt / max input shapes) an engine is built for.
* :func:`adapt_for_tensorrt` / :func:`tensorrt_type_problems`: TensorRT reads uint8 only in Cast
  layers and has no uint16 at all, so the graph handed to the builder reads the input's shape after
  its float cast and returns a uint16 leaf map as int32, narrowed back on the host (``host_casts``).
* :func:`io_specs`: for an input shape, the name, shape and dtype of every engine tensor, device side
  and host side, so buffers are sized before the engine runs.
* :class:`DeviceBuffers`: grow-only device allocations per tensor (reallocate only when an input is
  larger than any before), with the allocator injected so the policy is testable without CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import InputConstraints
from .metadata import INPUT_NAME, ModelMetadata

__all__ = [
    "DeviceBuffers",
    "ShapeProfile",
    "TensorSpec",
    "adapt_for_tensorrt",
    "io_specs",
    "tensorrt_type_problems",
]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeProfile:
    """Input sizes an engine accepts (``min`` .. ``max``) and is tuned for (``opt``), plus batch."""

    min_hw: tuple[int, int] = (64, 64)
    opt_hw: tuple[int, int] = (512, 1024)
    max_hw: tuple[int, int] = (1024, 2048)
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1

    def __post_init__(self) -> None:
        for lo, mid, hi, what in (
            (self.min_hw[0], self.opt_hw[0], self.max_hw[0], "height"),
            (self.min_hw[1], self.opt_hw[1], self.max_hw[1], "width"),
            (self.min_batch, self.opt_batch, self.max_batch, "batch"),
        ):
            if not 1 <= lo <= mid <= hi:
                raise ValueError(f"profile {what}: need 1 <= min <= opt <= max, got {lo}, {mid}, {hi}")

    @classmethod
    def for_size(cls, height: int, width: int) -> ShapeProfile:
        """Tuned for and bounded by ``height x width`` (the camera's size, or the fixed network size).

        Smaller inputs down to the default minimum still run; a larger one is an input this engine
        can never take (the node reports it once, naming the parameters that size the profile).
        """
        default_min = cls.__dataclass_fields__["min_hw"].default
        size = (int(height), int(width))
        return cls(min_hw=(min(default_min[0], size[0]), min(default_min[1], size[1])), opt_hw=size, max_hw=size)

    def input_shapes(self) -> tuple[Shape, Shape, Shape]:
        """(min, opt, max) ``B x H x W x 3`` shapes of the ``image`` input."""
        return (
            (self.min_batch, *self.min_hw, 3),
            (self.opt_batch, *self.opt_hw, 3),
            (self.max_batch, *self.max_hw, 3),
        )

    def constraints(self, output_stride: int, pad_to_stride: bool) -> InputConstraints:
        return InputConstraints(
            min_hw=self.min_hw,
            max_hw=self.max_hw,
            opt_hw=self.opt_hw,
            max_batch=self.max_batch,
            pad_multiple=output_stride if pad_to_stride else 1,
            output_stride=output_stride,
        )


@dataclass(frozen=True)
class TensorSpec:
    """One engine tensor: ``device_dtype`` is what the engine holds, ``host_dtype`` what the caller gets."""

    name: str
    shape: Shape
    device_dtype: np.dtype
    host_dtype: np.dtype
    is_input: bool = False

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.device_dtype.itemsize


def io_specs(meta: ModelMetadata, input_shape: Sequence[int], host_casts: Mapping[str, np.dtype]) -> list[TensorSpec]:
    """Input first, then outputs in graph order, for a ``B x H x W x 3`` input.

    Every output is ``B x H x W``: uint8 decisions, the leaf map in the hierarchy's dtype (held as
    the dtype in ``host_casts`` on the device when the graph was adapted), and the float32
    confidence when the model has one.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"expected a B x H x W x 3 input shape, got {shape}")
    specs = [TensorSpec(INPUT_NAME, shape, np.dtype(np.uint8), np.dtype(np.uint8), is_input=True)]
    for name in meta.output_names:
        host = meta.leaf_dtype if name == meta.leaf_output else np.dtype(np.uint8)
        if name == meta.confidence_output:
            host = np.dtype(np.float32)
        specs.append(TensorSpec(name, shape[:3], np.dtype(host_casts.get(name, host)), host))
    return specs


def adapt_for_tensorrt(model_bytes: bytes) -> tuple[bytes, dict[str, np.dtype]]:
    """Rewrite the two things in an exported graph that TensorRT's type rules refuse.

    * TensorRT's Shape layer does not read uint8: Shape nodes on the uint8 ``image`` input read the
      input's float Cast instead (same shape; the Cast is moved to the front to keep the order).
    * TensorRT has no uint16: a uint16 output's final Cast is retargeted to int32, exact for leaf
      ids < 65535; the engine narrows it back on the host (the returned ``{output: int32}``).

    Returns the (possibly unchanged) serialized model and the outputs held as int32.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    changed = _read_shapes_after_cast(graph)
    producers = {out: node for node in graph.node for out in node.output}
    casts: dict[str, np.dtype] = {}
    for output in graph.output:
        tensor_type = output.type.tensor_type
        if tensor_type.elem_type != onnx.TensorProto.UINT16:
            continue
        node = producers.get(output.name)
        if node is None or node.op_type != "Cast":
            raise ValueError(f"uint16 output {output.name!r} is not produced by a Cast: cannot adapt it for TensorRT")
        for attr in node.attribute:
            if attr.name == "to":
                attr.i = onnx.TensorProto.INT32
        tensor_type.elem_type = onnx.TensorProto.INT32
        casts[output.name] = np.dtype(np.int32)
    if not changed and not casts:
        return model_bytes, {}
    return model.SerializeToString(), casts


def _read_shapes_after_cast(graph: Any) -> bool:
    import onnx

    changed = False
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    for graph_input in graph.input:
        if graph_input.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        name = graph_input.name
        readers = [n for n in graph.node if name in n.input]
        to_float = [n for n in readers if n.op_type == "Cast" and _cast_target(n) in float_types]
        shapes = [n for n in readers if n.op_type == "Shape"]
        if not shapes or not to_float:
            continue
        cast = to_float[0]
        for node in shapes:
            node.input[0] = cast.output[0]
        nodes = [cast, *(n for n in graph.node if n is not cast)]
        del graph.node[:]
        graph.node.extend(nodes)
        changed = True
    return changed


def _cast_target(node: Any) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def tensorrt_type_problems(model_bytes: bytes) -> list[str]:
    """What in a graph breaks TensorRT's type rules (empty list: none): uint8 tensors may only be
    read by Cast (TensorRT 10), and uint16 does not exist. Checked before building, so the user
    gets a readable message instead of a parser failure deep in the build."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types |= {t.name: t.data_type for t in graph.initializer}
    problems = [f"tensor {name!r} is uint16" for name, t in types.items() if t == onnx.TensorProto.UINT16]
    for node in graph.node:
        for name in node.input:
            if types.get(name) == onnx.TensorProto.UINT8 and node.op_type != "Cast":
                problems.append(f"{node.op_type} node {node.name!r} reads uint8 tensor {name!r}")
    return problems


@dataclass
class DeviceBuffers:
    """Grow-only device allocations by tensor name.

    ``allocate(nbytes) -> pointer`` and ``release(pointer)`` are cudaMalloc / cudaFree in the
    engine. A smaller input reuses the existing buffer, so steady-state inference allocates nothing.
    """

    allocate: Callable[[int], int]
    release: Callable[[int], None]
    _buffers: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (pointer, capacity)

    def ensure(self, name: str, nbytes: int) -> int:
        """Pointer to at least ``nbytes`` for ``name`` (reallocating only to grow)."""
        current = self._buffers.get(name)
        if current is not None and current[1] >= nbytes:
            return current[0]
        if current is not None:
            self.release(current[0])
            del self._buffers[name]
        pointer = self.allocate(max(nbytes, 1))
        self._buffers[name] = (pointer, max(nbytes, 1))
        return pointer

    def release_all(self) -> None:
        for pointer, _ in self._buffers.values():
            self.release(pointer)
        self._buffers.clear()
