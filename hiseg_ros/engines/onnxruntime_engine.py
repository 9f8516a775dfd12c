"""ONNX Runtime backend: the CPU path on the development machines, CUDA / TensorRT providers elsewhere.

Graph optimisations are on (they fold the normalisation into the first convolution and fuse
conv + BN + ReLU: roughly a third off the CPU latency). The intra-op thread count is configurable
because the node shares the cores with the camera driver and DDS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Engine, InputConstraints, ModelLoadError
from .metadata import INPUT_NAME, ModelMetadata

__all__ = ["GPU_PROVIDERS", "OnnxRuntimeEngine", "choose_providers"]

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_CPU = "CPUExecutionProvider"


def choose_providers(
    available: Sequence[str],
    prefer_gpu: bool = True,
    precision: str = "fp32",
    cache_dir: str | Path | None = None,
    device_id: int = 0,
) -> list[str | tuple[str, dict[str, Any]]]:
    """Execution providers in priority order: TensorRT EP, CUDA EP (when installed), then CPU.

    CPU always comes last so that nodes a GPU provider cannot run still execute. ``fp16`` and the
    engine cache only mean something to the TensorRT EP; ``device_id`` is the GPU of both GPU providers.
    """
    chosen: list[str | tuple[str, dict[str, Any]]] = []
    if prefer_gpu and "TensorrtExecutionProvider" in available:
        options: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": precision == "fp16"}
        if cache_dir is not None:
            options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)}
        chosen.append(("TensorrtExecutionProvider", options))
    if prefer_gpu and "CUDAExecutionProvider" in available:
        chosen.append(("CUDAExecutionProvider", {"device_id": device_id}))
    chosen.append(_CPU)
    return chosen


class OnnxRuntimeEngine(Engine):
    """An exported hiseg model in an ``onnxruntime.InferenceSession``."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        intra_op_threads: int | None = None,
        spin_wait: bool = True,
        prefer_gpu: bool = True,
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        pad_to_stride: bool = False,
        device_id: int = 0,
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise ModelLoadError(path, "model file does not exist")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            if intra_op_threads < 0:
                raise ValueError(f"intra_op_threads must be >= 0 (0 = ONNX Runtime default), got {intra_op_threads}")
            options.intra_op_num_threads = intra_op_threads
        if not spin_wait:
            # ONNX Runtime's CPU threads busy-wait after each run by default: the fastest choice for a
            # process that only infers, but in the node they then hold the cores that DDS and the
            # output images need right after inference (docs/BENCHMARKS.md, node section).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = choose_providers(ort.get_available_providers(), prefer_gpu, precision, cache_dir, device_id)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / ... types
            raise ModelLoadError(path, f"ONNX Runtime cannot load the model: {exc}") from None
        meta = ModelMetadata.from_props(self._session.get_modelmeta().custom_metadata_map, path)
        self.metadata = meta
        self.model_path = path
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)":
            found = [(i.name, i.type) for i in inputs]
            raise ModelLoadError(path, f"expected one uint8 input {INPUT_NAME!r}, found {found}")
        if tuple(outputs) != meta.output_names:
            raise ModelLoadError(path, f"graph outputs {outputs} do not match the metadata {list(meta.output_names)}")
        # Without the confidence only the decision outputs are fetched (ONNX Runtime still runs the
        # whole graph: its inference builds do not prune to the fetched outputs; it saves the copy).
        self._outputs = {True: outputs, False: list(meta.output_names[:-1]) if meta.confidence_output else outputs}
        self.providers = tuple(self._session.get_providers())
        super().__init__(
            meta.hierarchy,
            f"onnxruntime[{','.join(self.providers)}]",
            constraints_from_shape(inputs[0].shape, meta.output_stride, pad_to_stride),
            has_confidence=bool(meta.confidence_output),
        )

    def _run(self, batch: np.ndarray, confidence: bool) -> Mapping[str, np.ndarray]:
        names = self._outputs[confidence]
        values = self._session.run(names, {INPUT_NAME: batch})
        return dict(zip(names, values, strict=True))


def constraints_from_shape(shape: Sequence[Any], output_stride: int, pad_to_stride: bool) -> InputConstraints:
    """Input constraints from the graph's ``image`` shape: symbolic dims are dynamic, ints are fixed."""
    batch, height, width = (shape[0], shape[1], shape[2]) if len(shape) == 4 else (None, None, None)
    fixed_hw = (height, width) if isinstance(height, int) and isinstance(width, int) else None
    return InputConstraints(
        min_hw=fixed_hw or (1, 1),
        max_hw=fixed_hw,
        opt_hw=fixed_hw,
        max_batch=batch if isinstance(batch, int) else None,
        pad_multiple=output_stride if pad_to_stride else 1,
        output_stride=output_stride,
    )
