"""The segmenter stage: a trained network's decisions constrained by the image's tags.

Tiny hierarchy (tests/tiny_hierarchy.py): root = road | sign | vehicle; sign = front | back;
front = stop | yield; vehicle = car | bus. In ``untaught`` the box set no longer labels bus, so no
dataset teaches the network to tell bus from car.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_hierarchy import TINY_YAML

from hiseg_ros.engines.checkpoint import ModelConfig, save_checkpoint
from hiseg_ros.hierarchy import Hierarchy, load_hierarchy
from training.data.readers.base import Sample
from training.labels.pseudo_labels.__main__ import build_parser, settings_from_args
from training.labels.pseudo_labels.generator import GeneratorConfig, WeakLabelGenerator
from training.labels.pseudo_labels.segmenter import (
    BACKGROUND,
    Segmenter,
    SegmenterConfig,
    tag_constrained_labels,
    taggable_nodes,
    taught_nodes,
)


def _hierarchy(folder: Path, yaml_text: str, name: str) -> Hierarchy:
    path = folder / f"{name}.yaml"
    path.write_text(yaml_text)
    return load_hierarchy(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return _hierarchy(tmp_path_factory.mktemp("h"), TINY_YAML, "tiny")


@pytest.fixture(scope="module")
def untaught(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    text = TINY_YAML.replace("4: null, 5: bus}", "4: null}")
    assert text != TINY_YAML
    return _hierarchy(tmp_path_factory.mktemp("h"), text, "tiny")


def one_hot(classes: int, decided: list[int], confidence: float = 0.8) -> np.ndarray:
    """``C x 1 x W`` probabilities: ``confidence`` on each pixel's decided class, the rest shared."""
    out = np.full((classes, 1, len(decided)), (1 - confidence) / (classes - 1), np.float32)
    for x, k in enumerate(decided):
        out[k, 0, x] = confidence
    return out


def probabilities(tiny: Hierarchy, root: list[int], vehicle: list[int], sign=None, front=None) -> dict:
    w = len(root)
    return {
        "root": one_hot(3, root),
        "vehicle": one_hot(2, vehicle),
        "sign": one_hot(2, sign or [0] * w),
        "front": one_hot(2, front or [0] * w),
    }


def test_taught_nodes_come_from_the_pixel_and_box_sets(tiny: Hierarchy, untaught: Hierarchy) -> None:
    assert {"road", "sign", "front", "back", "stop", "yield", "vehicle", "car", "bus"} <= taught_nodes(tiny)
    assert "bus" not in taught_nodes(untaught) and {"car", "vehicle"} <= taught_nodes(untaught)


def test_decisions_for_absent_classes_move_to_the_tagged_ones(tiny: Hierarchy) -> None:
    taught = taught_nodes(tiny)
    # root: road, vehicle, vehicle, sign; vehicle classifier: car, car, bus, -
    probs = probabilities(tiny, root=[0, 2, 2, 1], vehicle=[0, 0, 1, 0])
    # both vehicle classes tagged: the network's own choice; a sign pixel without a sign tag: background
    assert tag_constrained_labels(tiny, probs, ("car", "bus"), taught).tolist() == [[BACKGROUND, 0, 1, BACKGROUND]]
    # only bus tagged: the image holds no car, so the "car" pixels of a vehicle are the bus
    assert tag_constrained_labels(tiny, probs, ("bus",), taught).tolist() == [[BACKGROUND, 0, 0, BACKGROUND]]
    # the road pixel stays background whatever the tags say (the root is never re-assigned)
    assert tag_constrained_labels(tiny, probs, ("bus", "car", "sign"), taught)[0, 0] == BACKGROUND
    # a class the tag vocabulary cannot name is not moved: its missing tag says nothing
    assert tag_constrained_labels(tiny, probs, ("bus",), taught, taggable=frozenset({"vehicle", "bus"})).tolist() == [
        [BACKGROUND, BACKGROUND, 0, BACKGROUND]
    ]
    # tags that need not be complete: the network's decisions alone, nothing moves
    alone = tag_constrained_labels(tiny, probs, ("bus",), taught, complete=False)
    assert alone.tolist() == [[BACKGROUND, BACKGROUND, 0, BACKGROUND]]


def test_the_deepest_tag_on_the_path_labels_and_a_generic_tag_keeps_its_node(tiny: Hierarchy) -> None:
    taught = taught_nodes(tiny)
    # four sign pixels: front/stop, front/yield, back, front/stop
    probs = probabilities(tiny, root=[1, 1, 1, 1], vehicle=[0] * 4, sign=[0, 0, 1, 0], front=[0, 1, 0, 0])
    tagged = ("sign", "stop")  # a generic "sign" tag beside "stop sign"
    labels = tag_constrained_labels(tiny, probs, tagged, taught)
    # stop -> stop; yield and back: the generic "sign" tag covers them (not moved to stop)
    assert labels.tolist() == [[1, 0, 0, 1]]
    # without the generic tag the back pixel is re-assigned too: the image's only sign is a stop sign
    assert tag_constrained_labels(tiny, probs, ("stop",), taught).tolist() == [[0, 0, 0, 0]]


def test_untaught_classes_are_told_apart_by_attention_one_vote_per_region(untaught: Hierarchy) -> None:
    taught = taught_nodes(untaught)
    # two vehicles (pixels 0-2 and 4-6) split by a road pixel; the network says car everywhere
    probs = probabilities(untaught, root=[2, 2, 2, 0, 2, 2, 2], vehicle=[0] * 7)
    attention = np.zeros((2, 1, 7), np.float32)  # rows: car, bus
    attention[0, 0, :3] = [0.9, 0.2, 0.6]  # the left object: mostly car (pixel 1 alone would say bus)
    attention[1, 0, :3] = [0.1, 0.4, 0.2]
    attention[1, 0, 4:] = 0.7  # the right object: bus
    asked = []

    def maps() -> np.ndarray:
        asked.append(1)
        return attention

    labels = tag_constrained_labels(untaught, probs, ("car", "bus"), taught, maps)
    assert labels.tolist() == [[0, 0, 0, BACKGROUND, 1, 1, 1]] and asked == [1]
    # with every class taught, the attention is never asked for
    assert tag_constrained_labels(untaught, probs, ("car",), taught, None).tolist() == [[0, 0, 0, BACKGROUND, 0, 0, 0]]
    with pytest.raises(ValueError, match="attention"):
        tag_constrained_labels(untaught, probs, ("car", "bus"), taught, None)


@pytest.fixture(scope="module")
def checkpoint(tiny: Hierarchy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(shared_channels=16)
    return save_checkpoint(tmp_path_factory.mktemp("seg") / "net.pt", config.build(tiny), tiny, config)


class _NoAttention:
    def attention(self, image, nodes, size):  # every tiny class is taught: never asked
        raise AssertionError("attention asked for taught classes")


def test_generator_segmenter_stage_end_to_end(tiny: Hierarchy, checkpoint: Path) -> None:
    settings = {
        "stages": {"saliency": False, "erasing": False, "crf": False, "segmenter": True},
        "segmenter": {"checkpoint": str(checkpoint), "height": [32, 48]},
        "work_max_side": 48,
    }
    config = GeneratorConfig.from_dict(settings)
    assert GeneratorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    segmenter = Segmenter(config.segmenter_config, tiny)
    gen = WeakLabelGenerator(tiny, _NoAttention(), None, config, segmenter=segmenter)
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    nodes, cams, sal, labels = gen.maps(Sample("tg", "t", image, None, tags=("car", "stop sign")))
    assert set(nodes) == {"car", "stop"} and sal is None and labels.shape == (32, 48)
    assert cams.shape == (2, 32, 48) and not cams.any()  # attention not needed
    # exactly the rule applied to the network's probabilities at the work size
    taggable = taggable_nodes(tiny, "tg")
    assert {"stop", "front", "sign", "car", "vehicle"} <= taggable and "back" not in taggable
    probs = segmenter.probabilities(image, (32, 48))
    expected = tag_constrained_labels(tiny, probs, nodes, segmenter.taught, taggable=taggable)
    np.testing.assert_array_equal(labels, expected)
    assert gen(Sample("tg", "t", image, None, tags=("car",))).shape == (40, 60)
    # multi-scale: the mean of the single-scale probabilities
    singles = [Segmenter(SegmenterConfig(str(checkpoint), (h,)), tiny).probabilities(image, (32, 48)) for h in (32, 48)]
    both = segmenter.probabilities(image, (32, 48))
    for name, p in both.items():
        np.testing.assert_allclose(p, (singles[0][name] + singles[1][name]) / 2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.sum(0), 1.0, rtol=1e-5)
    assert gen.timings["segmenter"] > 0


def test_segmenter_settings_are_validated(tiny: Hierarchy, checkpoint: Path, tmp_path: Path) -> None:
    off = {"saliency": False, "erasing": False, "crf": False, "segmenter": True}
    with pytest.raises(ValueError, match="turn off"):
        GeneratorConfig.from_dict({"stages": {"segmenter": True}, "segmenter": {"checkpoint": "x"}})
    with pytest.raises(ValueError, match="needs segmenter.checkpoint"):
        GeneratorConfig.from_dict({"stages": off})
    with pytest.raises(ValueError, match="hard"):
        GeneratorConfig.from_dict({"stages": off, "segmenter": {"checkpoint": "x"}, "output": "soft"})
    with pytest.raises(ValueError, match="segmenter.size: unknown key"):
        GeneratorConfig.from_dict({"stages": off, "segmenter": {"checkpoint": "x", "size": 3}})
    with pytest.raises(ValueError, match="segmenter.height"):
        SegmenterConfig("x", heights=4)
    with pytest.raises(ValueError, match="segmenter.height"):
        GeneratorConfig.from_dict({"stages": off, "segmenter": {"checkpoint": "x", "height": [32, "a"]}})
    several = GeneratorConfig.from_dict({"stages": off, "segmenter": {"checkpoint": "x", "height": [32, 48]}})
    assert several.segmenter_config.heights == (32, 48)
    assert several.to_dict()["segmenter"] == {"checkpoint": "x", "height": [32, 48]}
    other = _hierarchy(tmp_path, TINY_YAML.replace("bus", "lorry"), "other")
    with pytest.raises(ValueError, match="classes differ"):
        Segmenter(SegmenterConfig(str(checkpoint)), other)


def test_cli_segmenter_stage() -> None:
    argv = ["generate", "--data", "d", "--out", "o", "--stages", "segmenter", "--segmenter-checkpoint", "n.pt"]
    settings = settings_from_args(build_parser().parse_args([*argv, "--segmenter-height", "256"]))
    assert settings["stages"] == {"saliency": False, "erasing": False, "crf": False, "segmenter": True}
    config = GeneratorConfig.from_dict(settings)
    assert config.segmenter and config.segmenter_config == SegmenterConfig(str(Path("n.pt").resolve()), (256,))
    settings = settings_from_args(build_parser().parse_args([*argv, "--segmenter-height", "256", "384"]))
    assert GeneratorConfig.from_dict(settings).segmenter_config.heights == (256, 384)


class _FixedAttention:
    """A tag classifier stand-in whose attention is fixed: bus on the right half, car on the left."""

    def attention(self, image, nodes, size):
        h, w = size
        maps = np.zeros((len(nodes), h, w), np.float32)
        for i, n in enumerate(nodes):
            if n == "bus":
                maps[i, h // 4 : 3 * h // 4, w // 2 :] = 1.0
            elif n == "car":
                maps[i, h // 4 : 3 * h // 4, : w // 2] = 1.0
        return maps


def test_untaught_attention_takes_the_attention_pipelines_labels_of_untaught_classes(
    untaught: Hierarchy, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from training.labels.pseudo_labels.saliency import OpenCVSaliency

    torch.manual_seed(1)
    config = ModelConfig(shared_channels=16)
    ckpt = save_checkpoint(tmp_path_factory.mktemp("seg") / "u.pt", config.build(untaught), untaught, config)
    attention_only = {"saliency": {"source": "spectral_residual"}, "stages": {"erasing": False, "crf": False}}
    both = attention_only | {
        "stages": {"erasing": False, "crf": False, "segmenter": True},
        "segmenter": {"checkpoint": str(ckpt), "height": 32, "untaught": "attention"},
    }
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    sample = Sample("tg", "t", image, None, tags=("car", "bus"))
    segmenter = Segmenter(GeneratorConfig.from_dict(both).segmenter_config, untaught)
    run = {}
    for name, settings in (("attention", attention_only), ("both", both)):
        config = GeneratorConfig.from_dict(settings | {"work_max_side": 48})
        gen = WeakLabelGenerator(untaught, _FixedAttention(), OpenCVSaliency(), config, segmenter=segmenter)
        run[name] = gen.maps(sample)
    nodes, cams, _, attended = run["attention"]
    assert nodes == ("car", "bus") and (attended == 1).any()  # the pipeline names bus somewhere
    probs = segmenter.probabilities(image, attended.shape)
    taggable = taggable_nodes(untaught, "tg")
    network = tag_constrained_labels(untaught, probs, nodes, segmenter.taught, lambda: cams, taggable=taggable)
    np.testing.assert_array_equal(run["both"][3], np.where(attended == 1, 1, network))  # bus (untaught) from attention
    assert GeneratorConfig.from_dict(both).to_dict()["segmenter"]["untaught"] == "attention"
    with pytest.raises(ValueError, match="segmenter.untaught"):
        SegmenterConfig("x", untaught="maybe")


def test_generate_with_the_segmenter_needs_a_tag_classifier_only_for_untaught_classes(
    tiny: Hierarchy, checkpoint: Path, tmp_path: Path
) -> None:
    from training.labels.pseudo_labels.generator import load_tag_classifier
    from training.labels.pseudo_labels.segmenter import check_classifier_needed

    off = {"saliency": False, "erasing": False, "crf": False, "segmenter": True}
    config = GeneratorConfig.from_dict({"stages": off, "segmenter": {"checkpoint": str(checkpoint)}})
    check_classifier_needed("", config.segmenter_config, tiny, "tg")  # every tiny tag class is taught: none needed
    stand_in = load_tag_classifier(config, tiny, "tg")
    with pytest.raises(ValueError, match="needs a tag classifier"):
        stand_in.attention(np.zeros((4, 4, 3), np.uint8), ("car",), (4, 4))
    untaught = _hierarchy(tmp_path, TINY_YAML.replace("4: null, 5: bus}", "4: null}"), "tiny")
    with pytest.raises(ValueError, match=r"for \['bus'\]"):
        check_classifier_needed("", config.segmenter_config, untaught, "tg")
    with pytest.raises(ValueError, match="tag classifier checkpoint is needed"):
        check_classifier_needed("", None, tiny, "tg")
