"""Classes per region (superpixels): SLICO regions, region means and votes, and the generator's regions stage.

Hand-made images whose object outline is known, real OpenCV superpixels, real label files written
by the generator command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hiseg_ros.hierarchy import load_hierarchy
from training import REPO
from training.data.readers.base import Sample
from training.labels.pseudo_labels import algorithm1
from training.labels.pseudo_labels.__main__ import build_parser, settings_from_args
from training.labels.pseudo_labels.classifier import (
    TagClassifier,
    TrainConfig,
    load_classifier,
    save_classifier,
    tag_node_space,
)
from training.labels.pseudo_labels.generator import GeneratorConfig, WeakLabelGenerator
from training.labels.pseudo_labels.regions import (
    RegionConfig,
    component_classes,
    diffuse_classes,
    region_edges,
    region_mean,
    region_vote,
    superpixels,
)
from training.labels.pseudo_labels.saliency import OpenCVSaliency

HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"


def _object_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A bright 24x24 object on a dark textured background; attention and saliency as coarse blurry
    blobs (like 18x24 Grad-CAM upsampled) that spill 6 px past the object on every side."""
    h, w = 64, 64
    rng = np.random.default_rng(0)
    image = rng.integers(20, 60, (h, w, 3)).astype(np.uint8)
    truth = np.zeros((h, w), bool)
    truth[20:44, 20:44] = True
    image[truth] = (200, 40, 40)
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-(((yy - 32) / 16.0) ** 2 + ((xx - 32) / 16.0) ** 2)).astype(np.float32)
    cams = blob[None]
    sal = np.clip(blob * 1.1, 0, 1).astype(np.float32)
    return image, cams, sal, truth


def test_superpixels_follow_colour_edges_and_are_numbered_densely() -> None:
    image, _, _, truth = _object_scene()
    regions = superpixels(image, RegionConfig(region_size=8))
    assert regions.shape == truth.shape and regions.dtype == np.int32
    ids = np.unique(regions)
    assert ids[0] == 0 and ids[-1] == len(ids) - 1 and len(ids) > 20
    inside = [r for r in ids if (truth[regions == r]).all()]
    assert len(inside) >= 4  # the object is tiled by regions of its own
    # superpixels hardly cross the outline: deciding by region majority mislabels < 10 % of the object's area
    majority = region_mean(truth.astype(np.float32), regions) > 0.5
    assert (majority != truth).sum() < 0.1 * truth.sum()
    with pytest.raises(ValueError, match="H x W x 3 uint8 RGB"):
        superpixels(image[..., 0])


def test_region_mean_and_vote_by_hand() -> None:
    regions = np.array([[0, 0, 1], [2, 2, 1]], np.int32)
    maps = np.array([[[1.0, 3.0, 4.0], [0.0, 1.0, 6.0]]], np.float32)
    np.testing.assert_allclose(region_mean(maps, regions)[0], [[2.0, 2.0, 5.0], [0.5, 0.5, 5.0]])
    np.testing.assert_allclose(region_mean(maps[0], regions), region_mean(maps, regions)[0])
    labels = np.array([[3, 3, -1], [0, -1, 2]], np.int32)
    # region 0: 3 wins; region 1: tie -1 / 2 goes to background; region 2: tie 0 / -1 goes to background
    np.testing.assert_array_equal(region_vote(labels, regions), [[3, 3, -1], [-1, -1, -1]])
    with pytest.raises(ValueError, match="disagree"):
        region_vote(labels[:, :2], regions)


def test_superpixel_modes_decide_once_per_superpixel() -> None:
    image, cams, sal, _ = _object_scene()
    regions = superpixels(image, RegionConfig(region_size=8))
    per_region = algorithm1(region_mean(cams, regions), region_mean(sal, regions))
    voted = region_vote(algorithm1(cams, sal), regions)
    for r in np.unique(regions):
        assert len(np.unique(per_region[regions == r])) == 1 and len(np.unique(voted[regions == r])) == 1


def _two_objects() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object A (class 0, columns 4-19) and object B (class 1, columns 28-43), background between;
    B's attention is broad and reaches into A's right third more strongly than A's own (coarse maps)."""
    h, w = 16, 48
    truth = np.full((h, w), -1, np.int32)
    truth[4:12, 4:20], truth[4:12, 28:44] = 0, 1
    x = np.arange(w, dtype=np.float32)
    cam_a = np.clip(1.0 - np.abs(x - 6) / 10, 0, 1)  # peaks at A's left part, 0 from column 16 on
    cam_b = np.clip(1.0 - np.abs(x - 34) / 22, 0, 1)  # broad: 0.6 at A's right edge
    cams = np.stack([np.tile(cam_a, (h, 1)), np.tile(cam_b, (h, 1))]).astype(np.float32)
    sal = np.where(truth >= 0, 0.8, 0.0).astype(np.float32)  # saliency knows where the objects are
    return truth, cams, sal


def test_components_give_a_whole_object_one_class() -> None:
    truth, cams, sal = _two_objects()
    per_pixel = algorithm1(cams, sal)
    assert (per_pixel >= 0).tolist() == (truth >= 0).tolist()  # saliency found both objects ...
    assert (per_pixel[truth == 0] == 1).mean() > 0.2  # ... but the argmax gives part of A to B
    fixed = component_classes(per_pixel, cams)
    np.testing.assert_array_equal(fixed, truth)
    np.testing.assert_array_equal(component_classes(np.full((2, 3), -1), cams[:, :2, :3]), np.full((2, 3), -1))
    with pytest.raises(ValueError, match="must be C x H x W"):
        component_classes(per_pixel, cams[0])


def test_region_config_validation_and_round_trip() -> None:
    assert RegionConfig.from_dict(RegionConfig(mode="vote").to_dict()) == RegionConfig(mode="vote")
    with pytest.raises(
        ValueError, match=r"regions.mode: expected one of \['maps', 'vote', 'components', 'diffusion'\]"
    ):
        RegionConfig(mode="lnet")
    with pytest.raises(ValueError, match="regions.region_size"):
        RegionConfig(region_size=0)
    with pytest.raises(ValueError, match="size: unknown key"):
        RegionConfig.from_dict({"size": 3})
    plain = GeneratorConfig.from_dict({"classifier": "c.pt"})
    assert "regions" not in plain.to_dict() and "regions" not in plain.to_dict()["stages"]  # old folders resume
    on = GeneratorConfig.from_dict({"classifier": "c.pt", "stages": {"regions": True}, "regions": {"mode": "vote"}})
    assert on.regions and on.regions_config.mode == "vote"
    assert GeneratorConfig.from_dict(on.to_dict()) == on and on.to_dict()["stages"]["regions"] is True


def test_cli_regions_stage_and_mode() -> None:
    args = build_parser().parse_args(["generate", "--data", "d", "--out", "o", "--stages", "saliency,regions"])
    assert settings_from_args(args)["stages"] == {"saliency": True, "erasing": False, "crf": False, "regions": True}
    argv = ["generate", "--data", "d", "--out", "o", "--stages", "saliency,crf,regions", "--regions", "vote"]
    settings = settings_from_args(build_parser().parse_args(argv))
    assert GeneratorConfig.from_dict(settings).regions_config.mode == "vote"


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    nodes = tag_node_space(load_hierarchy(HIERARCHY), "openscapes")
    model = TagClassifier(nodes, TrainConfig(input_size=(32, 48), pretrained=None, freeze_blocks=0))
    path = tmp_path_factory.mktemp("regions_cls") / "classifier.pt"
    save_classifier(model, path)
    return path


@pytest.mark.parametrize("mode", ["maps", "vote", "components", "diffusion"])
def test_generator_regions_stage(tiny_classifier: Path, mode: str) -> None:
    hierarchy = load_hierarchy(HIERARCHY)
    image, _, _, _ = _object_scene()
    stages = {"saliency": True, "erasing": False, "crf": mode == "vote", "regions": True}
    config = GeneratorConfig.from_dict(
        {
            "classifier": str(tiny_classifier),
            "saliency": {"source": "spectral_residual"},
            "stages": stages,
            "regions": {"mode": mode, "region_size": 8},
            "work_max_side": 64,
        }
    )
    gen = WeakLabelGenerator(hierarchy, load_classifier(tiny_classifier), OpenCVSaliency(), config)
    nodes, cams, _, labels = gen.maps(Sample("openscapes", "s", image, None, tags=("car", "bus")))
    assert set(nodes) == {"car", "bus"} and labels.shape == image.shape[:2]
    if mode == "components":  # one class per connected foreground region
        np.testing.assert_array_equal(component_classes(labels, cams), labels)
    else:  # one decision per superpixel
        regions = superpixels(image, config.regions_config)
        assert all(len(np.unique(labels[regions == r])) == 1 for r in np.unique(regions))
    assert gen.timings["regions"] > 0
    json.dumps(config.to_dict())  # recorded as the label folder's settings


# --------------------------------------------------------------------------- class-identity diffusion
def _red_and_blue() -> tuple[np.ndarray, np.ndarray]:
    """A 12x24 image: a red object (columns 0-11) beside a blue one (12-23), four 6x6 regions each."""
    image = np.zeros((12, 24, 3), np.uint8)
    image[:, :12] = (200, 30, 30)
    image[:, 12:] = (30, 30, 200)
    regions = (np.arange(12)[:, None] // 6) * 4 + np.arange(24)[None, :] // 6
    return image, regions.astype(np.int32)


def test_region_edges_are_the_touching_pairs_once() -> None:
    _, regions = _red_and_blue()  # a 2 x 4 grid of regions 0..7
    edges = region_edges(regions)
    expected = {(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7), (0, 4), (1, 5), (2, 6), (3, 7)}
    assert {tuple(e) for e in edges.tolist()} == expected and len(edges) == len(expected)


def test_diffusion_spreads_a_class_over_its_object_and_stops_at_a_colour_edge() -> None:
    image, regions = _red_and_blue()
    cams = np.zeros((1, 12, 24), np.float32)
    cams[0, :6, :6] = 1.0  # the class was seen on one corner of the red object only
    out = diffuse_classes(image, cams, regions, None, RegionConfig(mode="diffusion", alpha=0.9, steps=50))
    red, blue = out[0][:, :12], out[0][:, 12:]
    assert red.min() > 0.2  # every part of the red object now carries the class
    assert blue.max() < 1e-3  # the blue one (a CIELAB distance of ~190 >> sigma 8) does not
    assert out.max() <= 1.0 + 1e-6 and out.min() >= 0.0  # convex combinations: the input's range
    # alpha 0: no diffusion, the region means
    np.testing.assert_allclose(
        diffuse_classes(image, cams, regions, None, RegionConfig(alpha=0.0)), region_mean(cams, regions)
    )


def test_diffusion_stops_at_a_foreground_edge_of_one_colour() -> None:
    image, regions = _red_and_blue()
    image[:] = (200, 30, 30)  # one colour everywhere: only the saliency tells the objects apart
    cams = np.zeros((1, 12, 24), np.float32)
    cams[0, :6, :6] = 1.0
    config = RegionConfig(mode="diffusion", alpha=0.9, steps=50)
    colour_only = diffuse_classes(image, cams, regions, None, config)
    salient = np.zeros((12, 24), np.float32)
    salient[:, :12] = 1.0  # the left half is foreground
    with_fg = diffuse_classes(image, cams, regions, salient, config)
    assert colour_only[0][:, 12:].min() > 0.05  # without saliency the class leaks into the right half
    assert with_fg[0][:, 12:].max() < 1e-3 and with_fg[0][:, :12].min() > 0.2


def test_diffusion_settings_are_validated_and_recorded_only_in_diffusion_mode() -> None:
    assert "alpha" not in RegionConfig(mode="maps").to_dict()  # folders labelled before it keep their fingerprint
    config = RegionConfig(mode="diffusion", alpha=0.5, steps=3, sigma_color=4.0, sigma_foreground=0.3)
    assert RegionConfig.from_dict(config.to_dict()) == config and config.to_dict()["alpha"] == 0.5
    for key, value in (("alpha", 1.0), ("steps", 0), ("sigma_color", 0), ("sigma_foreground", -1.0)):
        with pytest.raises(ValueError, match=f"regions.{key}"):
            RegionConfig(mode="diffusion", **{key: value})
