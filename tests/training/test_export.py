"""ONNX export (training.export): graph signature, metadata, decisions equal to PyTorch, the leaf map
equal to the hierarchy's decision rule, the checkpoint contract and its errors.

The export itself (~25 s on 2 cores) runs once per module through the real command line
(``--random-init``); everything else reuses that file or needs no export at all.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from hiseg_ros.engines import ModelMetadata
from hiseg_ros.engines.bindings import adapt_for_tensorrt, tensorrt_type_problems
from hiseg_ros.engines.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointFormatError,
    ModelConfig,
    checkpoint_dict,
    load_checkpoint,
    save_checkpoint,
)
from hiseg_ros.engines.torch_graph import DecisionGraph, LeafFlatten
from hiseg_ros.hierarchy import Hierarchy, load_hierarchy
from hiseg_ros.model import NormalizeInput, decide
from training import REPO
from training.export import export_model, main

HIERARCHIES = REPO / "config" / "hierarchies"
SEED = 7
CONFIG = ModelConfig("mobilenet_v2", output_stride=16, shared_channels=32, adaptation_depth=1, adaptation_dilation=2)


def toy_hierarchy_yaml(name: str = "toy", id_offset: int = 0, extra_leaf: bool = False) -> str:
    """Three levels: root -> {ground, vehicle*, sign*}, vehicle -> {car, truck}, sign -> {front*, back},
    front -> {stop, yield, limit}. ``id_offset >= 255`` makes the leaf map uint16."""
    o = id_offset
    rows = [
        ("ground", 0, "root", None),
        ("vehicle", 100, "root", "vehicle"),
        ("sign", 101, "root", "sign"),
        ("car", 1, "vehicle", None),
        ("truck", 2, "vehicle", None),
        ("front", 102, "sign", "sign_front"),
        ("back", 3, "sign", None),
        ("stop", 4, "front", None),
        ("yield", 5, "front", None),
        ("limit", 6, "front", None),
    ]
    if extra_leaf:
        rows.append(("sky", 7, "root", None))
    lines = [f"name: {name}", "classes:"]
    for cls, cid, parent, classifier in rows:
        extra = f", classifier: {classifier}" if classifier else ""
        lines.append(f"  - {{name: {cls}, id: {cid + o}, parent: {parent}, color: [{cid % 256}, 10, 20]{extra}}}")
    return "\n".join(lines) + "\n"


def write_hierarchy(folder: Path, text: str, name: str = "toy.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("export")
    yaml_path = write_hierarchy(folder, toy_hierarchy_yaml())
    out = folder / "models" / "toy.onnx"
    argv = ["--random-init", "--hierarchy", str(yaml_path), "--out", str(out), "--seed", str(SEED)]
    argv += ["--backbone", CONFIG.backbone, "--output-stride", str(CONFIG.output_stride)]
    argv += ["--shared-channels", str(CONFIG.shared_channels), "--adaptation-dilation", "2"]
    assert main(argv) == 0
    hierarchy = load_hierarchy(yaml_path)
    torch.manual_seed(SEED)  # export_random_init's initialisation, rebuilt for the PyTorch reference
    graph = DecisionGraph(CONFIG.build(hierarchy).eval(), hierarchy).eval()
    return {"path": out, "hierarchy": hierarchy, "graph": graph, "model": onnx.load(out)}


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graph_signature_is_uint8_nhwc_in_and_decisions_out(exported: dict) -> None:
    model, hierarchy = exported["model"], exported["hierarchy"]
    assert model.opset_import[0].version >= 17
    (image,) = model.graph.input
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = _dims(image)
    assert all(isinstance(d, str) for d in dims[:3]) and dims[3] == 3, dims  # dynamic B, H, W
    names = [o.name for o in model.graph.output]
    assert names == [*hierarchy.classifier_names, "leaf", "confidence"]
    assert names[:-1] == ["root", "vehicle", "sign", "sign_front", "leaf"]
    for output in model.graph.output:
        want = onnx.TensorProto.FLOAT if output.name == "confidence" else onnx.TensorProto.UINT8
        assert output.type.tensor_type.elem_type == want, output.name
        assert _dims(output) == dims[:3]
    onnx.checker.check_model(str(exported["path"]), full_check=True)
    leftovers = [p.name for p in exported["path"].parent.iterdir() if p.name != "toy.onnx"]
    assert leftovers == []  # the temporary file was renamed, nothing else written


def test_metadata_makes_the_file_self_describing(exported: dict) -> None:
    props = {p.key: p.value for p in exported["model"].metadata_props}
    hierarchy = exported["hierarchy"]
    assert Hierarchy.from_json(props["hiseg.hierarchy"]) == hierarchy
    assert json.loads(props["hiseg.classifiers"]) == list(hierarchy.classifier_names)
    assert props["hiseg.input_layout"] == "uint8_nhwc_rgb"
    assert props["hiseg.backbone"] == "mobilenet_v2"
    assert props["hiseg.output_stride"] == "16"
    assert props["hiseg.format_version"] == "1"
    assert props["hiseg.leaf_dtype"] == "uint8"
    assert json.loads(props["hiseg.model_config"]) == CONFIG.to_dict()
    provenance = json.loads(props["hiseg.provenance"])
    assert provenance["tool"] == "training.export" and provenance["source"] == "random-init"
    assert provenance["seed"] == SEED and provenance["opset"] == 18
    meta = ModelMetadata.from_props(props, exported["path"])
    assert meta.hierarchy == hierarchy and meta.output_names[-2:] == ("leaf", "confidence")
    assert props["hiseg.confidence_output"] == "confidence"
    # Exporter debug info (stack traces with this machine's paths) is not shipped.
    assert not any(node.metadata_props for node in exported["model"].graph.node)


@pytest.mark.parametrize("shape", [(1, 64, 96, 3), (1, 67, 101, 3), (1, 33, 45, 3), (2, 48, 80, 3)])
def test_onnxruntime_equals_pytorch_and_the_decision_rule(exported: dict, shape: tuple[int, ...]) -> None:
    hierarchy = exported["hierarchy"]
    session = ort.InferenceSession(str(exported["path"]), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    *got, confidence = session.run(None, {"image": image})
    with torch.inference_mode():
        expected = [t.numpy() for t in exported["graph"](torch.from_numpy(image))]
        graph_with_confidence = DecisionGraph(exported["graph"].net, hierarchy, confidence=True).eval()
        expected_confidence = graph_with_confidence(torch.from_numpy(image))[-1].numpy()
    assert confidence.dtype == np.float32 and confidence.shape == shape[:3]
    np.testing.assert_allclose(confidence, expected_confidence, atol=1e-4)
    assert ((confidence > 0.0) & (confidence <= 1.0)).all()
    for name, a, b in zip([*hierarchy.classifier_names, "leaf"], got, expected, strict=True):
        assert a.dtype == np.uint8 and a.shape == shape[:3], name
        assert (a == b).mean() >= 0.999, name  # float near-ties may flip a stray pixel
    decisions = dict(zip(hierarchy.classifier_names, got, strict=False))
    np.testing.assert_array_equal(got[-1], hierarchy.flatten(decisions))
    assert len(np.unique(got[0])) > 1  # a random-init net still decides differently across the image


def test_graph_adapted_for_tensorrt_keeps_its_outputs(exported: dict) -> None:
    """TensorRT reads uint8 only in Cast layers: the exported graph's only offence is reading the
    input's shape, which the TensorRT adaptation moves behind the float cast without changing a value."""
    original = exported["path"].read_bytes()
    assert {p.split(" ")[0] for p in tensorrt_type_problems(original)} == {"Shape"}
    adapted, casts = adapt_for_tensorrt(original)
    assert casts == {} and tensorrt_type_problems(adapted) == []
    onnx.checker.check_model(onnx.load_from_string(adapted), full_check=True)
    image = np.random.default_rng(4).integers(0, 256, (2, 40, 72, 3), dtype=np.uint8)
    before = ort.InferenceSession(original, providers=["CPUExecutionProvider"]).run(None, {"image": image})
    after = ort.InferenceSession(adapted, providers=["CPUExecutionProvider"]).run(None, {"image": image})
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ the graph module (no export needed)
def test_decisions_equal_decide_exactly() -> None:
    """The TensorRT-friendly graph (float upsampling) decides exactly like ``decide`` (uint8 upsampling)."""
    hierarchy = load_hierarchy(HIERARCHIES / "iv2018.yaml")
    torch.manual_seed(0)
    net = CONFIG.build(hierarchy).eval()
    image = torch.randint(0, 256, (2, 67, 101, 3), dtype=torch.uint8)
    with torch.inference_mode():
        ours = DecisionGraph(net, hierarchy)(image)
        reference = decide(net(NormalizeInput("uint8_nhwc")(image)), image.shape[1:3], "argmax_nearest")
    for a, name in zip(ours[:-1], hierarchy.classifier_names, strict=True):
        assert torch.equal(a, reference[name])
    decisions = {n: t.numpy() for n, t in zip(hierarchy.classifier_names, ours, strict=False)}
    np.testing.assert_array_equal(ours[-1].numpy(), hierarchy.flatten(decisions))


@pytest.mark.parametrize("source", ["iv2018.yaml", "iv2019.yaml", "iv2018_flat.yaml", "toy", "toy_uint16"])
def test_leaf_flatten_equals_hierarchy_flatten(tmp_path: Path, source: str) -> None:
    if source.startswith("toy"):
        offset = 300 if source == "toy_uint16" else 0
        hierarchy = load_hierarchy(write_hierarchy(tmp_path, toy_hierarchy_yaml(id_offset=offset)))
    else:
        hierarchy = load_hierarchy(HIERARCHIES / source)
    rng = np.random.default_rng(1)
    decisions = {n: rng.integers(0, k, (3, 17, 29)).astype(np.uint8) for n, k in hierarchy.classifier_sizes}
    leaf = LeafFlatten(hierarchy)([torch.from_numpy(decisions[n]).to(torch.int32) for n in hierarchy.classifier_names])
    expected = hierarchy.flatten(decisions)
    assert leaf.numpy().dtype == expected.dtype == hierarchy.mask_dtype
    np.testing.assert_array_equal(leaf.numpy(), expected)


# ------------------------------------------------------------------ checkpoint contract and command line
@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Hierarchy]:
    path = write_hierarchy(tmp_path_factory.mktemp("toy"), toy_hierarchy_yaml())
    return path, load_hierarchy(path)


@pytest.fixture(scope="module")
def small_net(toy: tuple[Path, Hierarchy]) -> torch.nn.Module:
    torch.manual_seed(0)
    return CONFIG.build(toy[1]).eval()


def test_checkpoint_round_trip(tmp_path: Path, toy: tuple[Path, Hierarchy], small_net: torch.nn.Module) -> None:
    path = save_checkpoint(tmp_path / "ckpt.pt", small_net, toy[1], CONFIG)
    loaded = load_checkpoint(path, expected_hierarchy=toy[1])
    assert loaded.hierarchy == toy[1] and loaded.config == CONFIG and not loaded.net.training
    for key, value in small_net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value), key
    # The training loop's own keys and a DistributedDataParallel prefix are fine.
    wrapped = checkpoint_dict(small_net, toy[1], CONFIG)
    wrapped["model"] = {f"module.{k}": v for k, v in wrapped["model"].items()}
    # What the training loop kept before its numpy RNG state became a tensor: numpy arrays and scalars.
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    wrapped |= {"optimizer": {"lr": 0.01}, "iteration": 12, "rng": rng, "metrics": {"loss": np.float64(0.5)}}
    torch.save(wrapped, tmp_path / "ddp.pt")
    ddp = load_checkpoint(tmp_path / "ddp.pt")
    assert ddp.config == CONFIG and ddp.training_info == {"iteration": 12}  # scalars go into the provenance


def test_training_state_is_written_only_in_a_form_weights_only_reads(
    tmp_path: Path, toy: tuple[Path, Hierarchy], small_net: torch.nn.Module
) -> None:
    state = {"iteration": 3, "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}, "scaler": None}
    path = save_checkpoint(tmp_path / "train.pt", small_net, toy[1], CONFIG, training=state)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no allow-listed classes needed
    assert raw["format"] == CHECKPOINT_FORMAT and raw["iteration"] == 3
    assert torch.equal(raw["rng"]["torch"], state["rng"]["torch"]) and raw["rng"]["python"] == state["rng"]["python"]
    loaded = load_checkpoint(path)
    assert loaded.training_info == {"format": CHECKPOINT_FORMAT, "iteration": 3}
    with pytest.raises(TypeError, match=r"metrics\['loss'\]: a float64 cannot be read back with weights_only"):
        save_checkpoint(tmp_path / "np.pt", small_net, toy[1], CONFIG, training={"metrics": {"loss": np.float64(1)}})
    with pytest.raises(TypeError, match=r"rng\['numpy'\]\[1\]: a ndarray"):
        checkpoint_dict(small_net, toy[1], CONFIG, training={"rng": {"numpy": np.random.get_state()}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\]"):
        checkpoint_dict(small_net, toy[1], CONFIG, training={"epoch": 1})
    assert not (tmp_path / "np.pt").exists()


def test_expected_model_config_is_checked(
    tmp_path: Path, toy: tuple[Path, Hierarchy], small_net: torch.nn.Module
) -> None:
    path = save_checkpoint(tmp_path / "ckpt.pt", small_net, toy[1], CONFIG)
    assert load_checkpoint(path, expected_config=CONFIG).config == CONFIG
    other = dataclasses.replace(CONFIG, adaptation_dilation=1)
    with pytest.raises(CheckpointFormatError, match=r"ckpt.pt: .*model_config.*adaptation_dilation: checkpoint 2 vs 1"):
        load_checkpoint(path, expected_config=other)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("hierarchy"), r"lacks key\(s\) \['hierarchy'\]"),
        (lambda c: c.pop("model_config"), r"lacks key\(s\) \['model_config'\]"),
        (lambda c: c.update(hierarchy="{not json"), "corrupt hierarchy"),
        (lambda c: c["model_config"].update(backbone="vgg16"), "model_config.backbone"),
        (lambda c: c["model_config"].update(head="aspp"), r"unknown \['head'\]"),
        (lambda c: c["model_config"].pop("output_stride"), r"missing \['output_stride'\]"),
        (lambda c: c["model_config"].update(shared_channels=16), "weights do not fit"),
        (lambda c: c["model"].pop("reduction.0.weight"), "missing \\['reduction.0.weight'\\]"),
    ],
)
def test_bad_checkpoints_name_the_file(
    tmp_path: Path, toy: tuple[Path, Hierarchy], small_net: torch.nn.Module, edit, message: str
) -> None:
    content = checkpoint_dict(small_net, toy[1], CONFIG)
    content["model_config"] = dict(content["model_config"])
    edit(content)
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointFormatError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_unreadable_checkpoints_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(CheckpointFormatError, match="garbage.pt: cannot read"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointFormatError, match="missing.pt: checkpoint file does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": torch.nn.Conv2d(1, 1, 1)}, tmp_path / "pickled_module.pt")  # code, not data
    with pytest.raises(CheckpointFormatError, match="pickled_module.pt: cannot read as a torch checkpoint"):
        load_checkpoint(tmp_path / "pickled_module.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointFormatError, match="list.pt: expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_command_line_refuses_a_checkpoint_of_another_hierarchy(
    tmp_path: Path, toy: tuple[Path, Hierarchy], small_net: torch.nn.Module, capsys: pytest.CaptureFixture
) -> None:
    ckpt = save_checkpoint(tmp_path / "toy.pt", small_net, toy[1], CONFIG)
    other = write_hierarchy(tmp_path, toy_hierarchy_yaml(extra_leaf=True), "other.yaml")
    out = tmp_path / "model.onnx"
    assert main(["--checkpoint", str(ckpt), "--hierarchy", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "does not match" in err and "other.yaml" in err and "classifiers" in err
    assert not out.exists()
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out)]) == 2
    assert "nope.pt: checkpoint file does not exist" in capsys.readouterr().err


def test_command_line_usage_errors(tmp_path: Path, toy: tuple[Path, Hierarchy]) -> None:
    out = str(tmp_path / "m.onnx")
    with pytest.raises(SystemExit) as info:
        main(["--random-init", "--out", out])  # no --hierarchy
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["--random-init", "--checkpoint", "x.pt", "--hierarchy", str(toy[0]), "--out", out])
    with pytest.raises(SystemExit):
        main(["--hierarchy", str(toy[0]), "--out", out])  # neither source


def test_export_refuses_a_network_of_another_hierarchy(tmp_path: Path, small_net: torch.nn.Module) -> None:
    other = load_hierarchy(HIERARCHIES / "iv2018.yaml")
    with pytest.raises(ValueError, match="network classifiers"):
        export_model(small_net, other, tmp_path / "m.onnx", CONFIG, "{}")
    assert list(tmp_path.iterdir()) == []
