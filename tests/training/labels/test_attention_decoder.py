"""The class-conditioned attention decoder (TransferNet-style): training pairs from per-pixel labels,
a decoder that turns coarse attention into the attended object's mask, the generator stage, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hiseg_ros.hierarchy import load_hierarchy
from tests.dataset_files import make_cityscapes, make_vistas
from training import REPO
from training.data.readers.base import Sample
from training.labels.pseudo_labels.__main__ import main
from training.labels.pseudo_labels.attention_decoder import (
    MIN_MASK_PIXELS,
    AttentionDecoder,
    TrainingPair,
    load_decoder,
    node_mask,
    save_decoder,
    train_decoder,
    training_pairs,
)
from training.labels.pseudo_labels.classifier import TagClassifier, TrainConfig, save_classifier, tag_node_space
from training.labels.pseudo_labels.generator import GeneratorConfig, WeakLabelGenerator
from training.labels.pseudo_labels.saliency import OpenCVSaliency

HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"
SIZE = (48, 64)


@pytest.fixture(scope="module")
def hierarchy():
    return load_hierarchy(HIERARCHY)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    nodes = tag_node_space(load_hierarchy(HIERARCHY), "openscapes")
    model = TagClassifier(nodes, TrainConfig(input_size=(32, 48), pretrained=None, freeze_blocks=0))
    path = tmp_path_factory.mktemp("decoder_cls") / "classifier.pt"
    save_classifier(model, path)
    return path


def test_node_mask_takes_the_node_and_its_descendants(hierarchy) -> None:
    label = np.array([[26, 20, 24], [27, 20, 0]], np.uint8)  # car, traffic sign, person / truck, sign, unlabeled
    sample = Sample("cityscapes", "c", np.zeros((2, 3, 3), np.uint8), label)
    np.testing.assert_array_equal(node_mask(hierarchy, sample, "car"), [[1, 0, 0], [0, 0, 0]])
    # Cityscapes' traffic sign is traffic-sign-front, a descendant of the tag node traffic-sign
    np.testing.assert_array_equal(node_mask(hierarchy, sample, "traffic-sign"), [[0, 1, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="no per-pixel label"):
        node_mask(hierarchy, Sample("cityscapes", "c", sample.image, None), "car")


def test_training_pairs_only_for_labelled_nodes_never_the_excluded(hierarchy, tiny_classifier) -> None:
    from training.labels.pseudo_labels.classifier import load_classifier

    label = np.zeros((24, 32), np.uint8)
    label[:12, :16] = 26  # car: a quarter of the image
    label[12:, 16:] = 28  # bus: a quarter
    label[0, 31] = 24  # person: one pixel, below MIN_MASK_PIXELS at any size here
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    samples = [Sample("cityscapes", "c", image, label)]
    classifier = load_classifier(tiny_classifier)
    images, pairs = training_pairs(samples, hierarchy, classifier, SIZE)
    assert len(images) == 1 and images[0].shape == (*SIZE, 3)
    assert sorted(p.node for p in pairs) == ["bus", "car"]
    for p in pairs:
        assert p.attention.shape == SIZE and p.mask.shape == SIZE and p.mask.sum() >= MIN_MASK_PIXELS
    assert next(p for p in pairs if p.node == "car").mask[: SIZE[0] // 2, : SIZE[1] // 2].all()
    _, held_out = training_pairs(samples, hierarchy, classifier, SIZE, exclude=("bus",))
    assert [p.node for p in held_out] == ["car"]


def _toy(rng: np.random.Generator, distractor: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grey noise with a red rectangle (the attended object) and maybe a second one (not attended).

    Attention = a broad Gaussian around the object's centre, as coarse as a Grad-CAM cell: it spills
    far past the object, so thresholding it cannot give the outline; the image's colour edges can."""
    h, w = SIZE
    image = rng.integers(90, 140, (h, w, 3)).astype(np.uint8)
    mask, other = np.zeros(SIZE, bool), np.zeros(SIZE, bool)
    rh, rw = int(rng.integers(8, 14)), int(rng.integers(8, 14))
    y, x = int(rng.integers(0, h - rh)), int(rng.integers(0, w // 2 - rw))
    mask[y : y + rh, x : x + rw] = True
    if distractor:
        y2, x2 = int(rng.integers(0, h - rh)), int(rng.integers(w // 2 + 2, w - rw))
        other[y2 : y2 + rh, x2 : x2 + rw] = True
    image[mask | other] = (200, 30, 30)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, sigma = y + rh / 2, x + rw / 2, 1.2 * max(rh, rw)
    attention = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)
    return image, attention, mask, other


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_decoder_draws_the_attended_object_not_the_attention_blob_nor_the_distractor(tmp_path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, pairs = [], []
    for i in range(24):
        image, attention, mask, _ = _toy(rng, distractor=i % 2 == 1)
        images.append(image)
        pairs.append(TrainingPair(i, "car", attention.astype(np.float16), mask))
    config = TrainConfig(input_size=SIZE, batch_size=8, iterations=150, lr=0.05, freeze_blocks=99)
    model = train_decoder(images, pairs, config)
    decoder_iou, attention_iou, on_distractor = [], [], []
    for _ in range(6):  # held-out toys, each with a distractor
        image, attention, mask, other = _toy(rng, distractor=True)
        prob = model.masks(image, attention[None])[0]
        assert prob.shape == SIZE and prob.min() >= 0.0 and prob.max() <= 1.0
        decoder_iou.append(_iou(prob >= 0.5, mask))
        attention_iou.append(_iou(attention >= 0.5, mask))
        on_distractor.append(float(prob[other].mean()))
    assert np.mean(decoder_iou) > np.mean(attention_iou) + 0.15, (decoder_iou, attention_iou)
    assert np.mean(on_distractor) < 0.3, on_distractor
    # checkpoint round trip gives the same masks
    save_decoder(model, tmp_path / "decoder.pt", ["car"])
    again = load_decoder(tmp_path / "decoder.pt")
    np.testing.assert_allclose(again.masks(image, attention[None]), model.masks(image, attention[None]), atol=1e-6)


def test_decoder_refuses_an_empty_training_set_and_another_backbone() -> None:
    with pytest.raises(ValueError, match="no training pairs"):
        train_decoder([], [], TrainConfig(input_size=SIZE, pretrained=None))
    with pytest.raises(ValueError, match="mobilenet_v2"):
        AttentionDecoder(TrainConfig(backbone="resnet18", pretrained=None))


def test_generator_decoder_stage(hierarchy, tiny_classifier, tmp_path) -> None:
    from training.labels.pseudo_labels.classifier import load_classifier

    decoder = AttentionDecoder(TrainConfig(input_size=(32, 48), pretrained=None, freeze_blocks=99))
    save_decoder(decoder, tmp_path / "decoder.pt", ["car"])
    base = {
        "classifier": str(tiny_classifier),
        "saliency": {"source": "spectral_residual"},
        "stages": {"saliency": True, "erasing": False, "crf": True},
        "work_max_side": 48,
    }
    plain = GeneratorConfig.from_dict(base)
    assert "decoder" not in plain.to_dict() and "decoder" not in plain.to_dict()["stages"]  # old folders resume
    with pytest.raises(ValueError, match="decoder.checkpoint"):
        GeneratorConfig.from_dict({**base, "stages": {**base["stages"], "decoder": True}})
    with pytest.raises(ValueError, match="decoder.weights: unknown key"):
        GeneratorConfig.from_dict({**base, "decoder": {"weights": "x"}})
    config = GeneratorConfig.from_dict(
        {**base, "stages": {**base["stages"], "decoder": True}, "decoder": {"checkpoint": str(tmp_path / "decoder.pt")}}
    )
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    json.dumps(config.to_dict())
    classifier = load_classifier(tiny_classifier)
    with pytest.raises(ValueError, match="no attention decoder"):
        WeakLabelGenerator(hierarchy, classifier, OpenCVSaliency(), config)
    gen = WeakLabelGenerator(
        hierarchy, classifier, OpenCVSaliency(), config, decoder=load_decoder(tmp_path / "decoder.pt")
    )
    image = np.random.default_rng(2).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    sample = Sample("openscapes", "s", image, None, tags=("car", "bus"))
    nodes, maps, _, labels = gen.maps(sample)
    cams = classifier.attention(image, nodes, (30, 40))
    np.testing.assert_allclose(maps, decoder.masks(image, cams), atol=1e-5)  # the decoder's masks replace Grad-CAM
    assert labels.shape == (30, 40) and gen.timings["decoder"] > 0


def test_train_decoder_command(tmp_path, tiny_classifier) -> None:
    make_cityscapes(tmp_path / "data" / "cityscapes", "train", ["aachen_000000_000019", "aachen_000001_000019"])
    make_vistas(tmp_path / "data" / "vistas", "training", ["v1", "v2"])
    out = tmp_path / "decoder.pt"
    argv = ["train-decoder", "--data-root", str(tmp_path / "data"), "--classifier", str(tiny_classifier)]
    argv += ["--input-size", "32", "48", "--iterations", "3", "--random-init", "--out", str(out), "--exclude", "bus"]
    assert main(argv) == 0
    payload = torch.load(out, weights_only=True)
    assert payload["trained_nodes"] and "bus" not in payload["trained_nodes"]
    assert load_decoder(out).config.input_size == (32, 48)
    missing = ["train-decoder", "--data-root", str(tmp_path / "data"), "--classifier", str(tmp_path / "no.pt")]
    assert main([*missing, "--out", str(out)]) == 2


# --------------------------------------------------------------------------- adversarial refinement (P-Net)
def test_adversarial_decoder_keeps_learning_masks_and_its_critic_learns(hierarchy, tiny_classifier) -> None:
    from training.labels.pseudo_labels.adversarial import tag_pairs, train_decoder_adversarial
    from training.labels.pseudo_labels.classifier import load_classifier

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, pairs, tag_images, unlabelled = [], [], [], []
    for i in range(16):
        image, attention, mask, _ = _toy(rng, distractor=False)
        images.append(image)
        pairs.append(TrainingPair(i, "car", attention.astype(np.float16), mask))
        image, attention, _, _ = _toy(rng, distractor=True)  # tag images: attention only, no mask
        tag_images.append(image)
        unlabelled.append(TrainingPair(i, "bus", attention.astype(np.float16), None))
    config = TrainConfig(input_size=SIZE, batch_size=8, iterations=150, lr=0.05, freeze_blocks=99)
    model, losses = train_decoder_adversarial(images, pairs, tag_images, unlabelled, config, weight=0.1)
    assert all(np.isfinite(v) for v in losses.values())
    assert losses["critic"] < 2 * np.log(2), losses  # below chance: it tells true masks from the decoder's
    ious = []
    for _ in range(4):
        image, attention, mask, _ = _toy(rng, distractor=False)
        ious.append(_iou(model.masks(image, attention[None])[0] >= 0.5, mask))
    assert np.mean(ious) > 0.5, ious
    with pytest.raises(ValueError, match="tag-image pairs"):
        train_decoder_adversarial(images, pairs, tag_images, [], config, weight=0.1)
    with pytest.raises(ValueError, match="weight"):
        train_decoder_adversarial(images, pairs, tag_images, unlabelled, config, weight=0.0)
    # tag pairs: one mask-less pair per known tag node of each image
    sample = Sample("openscapes", "t", images[0], None, tags=("car", "man", "zebra-crossing-unknown"))
    with pytest.raises(Exception, match="unknown tag"):
        tag_pairs([sample], hierarchy, load_classifier(tiny_classifier), SIZE)
    sample = Sample("openscapes", "t", images[0], None, tags=("car", "man"))
    got_images, got = tag_pairs([sample], hierarchy, load_classifier(tiny_classifier), SIZE)
    assert len(got_images) == 1 and sorted(p.node for p in got) == ["car", "person"]
    assert all(p.mask is None and p.attention.shape == SIZE for p in got)


def test_cli_decoder_stage_and_checkpoint() -> None:
    from training.labels.pseudo_labels.__main__ import build_parser, settings_from_args

    argv = ["generate", "--data", "d", "--out", "o", "--stages", "saliency,crf,decoder"]
    settings = settings_from_args(build_parser().parse_args([*argv, "--decoder-checkpoint", "dec.pt"]))
    assert settings["stages"]["decoder"] is True
    assert settings["decoder"] == {"checkpoint": str(Path("dec.pt").resolve())}
    plain = settings_from_args(build_parser().parse_args([*argv[:-1], "saliency,crf"]))
    assert "decoder" not in plain["stages"] and "decoder" not in plain  # opt-in: old folders resume


def test_generator_keeps_attention_for_nodes_the_decoder_never_saw(hierarchy, tiny_classifier, tmp_path) -> None:
    from training.labels.pseudo_labels.classifier import load_classifier

    save_decoder(AttentionDecoder(TrainConfig(input_size=(32, 48), pretrained=None)), tmp_path / "d.pt", ["car"])
    decoder = load_decoder(tmp_path / "d.pt")
    assert decoder.trained_nodes == ("car",)
    settings = {
        "classifier": str(tiny_classifier),
        "stages": {"saliency": False, "erasing": False, "crf": False, "decoder": True},
        "decoder": {"checkpoint": str(tmp_path / "d.pt"), "unseen": "attention"},
        "work_max_side": 48,
    }
    config = GeneratorConfig.from_dict(settings)
    assert config.to_dict()["decoder"]["unseen"] == "attention"
    with pytest.raises(ValueError, match="decoder.unseen"):
        GeneratorConfig.from_dict({**settings, "decoder": {**settings["decoder"], "unseen": "maybe"}})
    classifier = load_classifier(tiny_classifier)
    gen = WeakLabelGenerator(hierarchy, classifier, None, config, decoder=decoder)
    image = np.random.default_rng(3).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    nodes, maps, _, _ = gen.maps(Sample("openscapes", "s", image, None, tags=("car", "bus")))
    cams = classifier.attention(image, nodes, (30, 40))
    car, bus = nodes.index("car"), nodes.index("bus")
    np.testing.assert_allclose(maps[car], decoder.masks(image, cams)[car], atol=1e-5)  # seen: the decoder's mask
    np.testing.assert_allclose(maps[bus], cams[bus], atol=1e-6)  # never seen: its Grad-CAM map
