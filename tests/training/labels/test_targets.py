"""Training targets: per-pixel labels, box / tag pseudo ground truth, projection onto classifiers, collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_hierarchy import load_tiny

from hiseg_ros.hierarchy import IGNORE, Hierarchy, load_hierarchy
from training import REPO
from training.data.readers.base import Box, Sample
from training.labels.boxes import BoxGenerator, box_distribution
from training.labels.collate import collate_targets
from training.labels.node_distribution import NodeDistribution, PseudoLabelError, PseudoLabelGenerator
from training.labels.tags import UniformTagGenerator
from training.labels.targets import (
    PseudoLabelConfig,
    SampleTargets,
    SoftTarget,
    TargetBuilder,
    untaught_classifiers,
    weak_targets,
)

HIERARCHIES = REPO / "config" / "hierarchies"


def _dense(target: NodeDistribution | SoftTarget) -> np.ndarray:
    """A palette-encoded distribution as ``columns x H x W`` float32 mass (zeros where void)."""
    padded = np.vstack([target.table, np.zeros((1, target.table.shape[1]), np.float32)])
    return np.moveaxis(padded[target.index], -1, 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return load_tiny(tmp_path_factory.mktemp("h"))


@pytest.fixture(scope="module")
def iv2018() -> Hierarchy:
    return load_hierarchy(HIERARCHIES / "iv2018.yaml")


def _image(h: int, w: int) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def _box_sample(boxes: list[Box], h: int = 4, w: int = 6, dataset: str = "bx") -> Sample:
    return Sample(dataset, "s", _image(h, w), None, boxes=tuple(boxes))


def _tag_sample(tags: tuple[str, ...], h: int = 2, w: int = 3) -> Sample:
    return Sample("tg", "t", _image(h, w), None, tags=tags)


def _assert_root_ignored(t: SampleTargets) -> None:
    assert t.kind == "weak"
    assert (t.hard["root"] == IGNORE).all()
    assert "root" not in t.soft


# --------------------------------------------------------------------------- per-pixel datasets
def test_cityscapes_road_teaches_root_drivable_only(iv2018: Hierarchy):
    label = np.array([[7, 0], [20, 13]], dtype=np.uint8)  # road, unlabeled, traffic sign, fence
    t = TargetBuilder(iv2018)(Sample("cityscapes", "c", _image(2, 2), label))
    assert t.kind == "pixel" and not t.soft
    root = iv2018.classifier("root").classes
    assert root[t.hard["root"][0, 0]] == "drivable"
    assert t.hard["root"][0, 1] == IGNORE
    assert root[t.hard["root"][1, 0]] == "traffic-sign" and root[t.hard["root"][1, 1]] == "fence"
    assert (t.hard["drivable"] == IGNORE).all()  # Cityscapes road is coarser than the drivable classes
    assert t.hard["traffic_sign"][1, 0] == 0  # front
    assert (t.hard["traffic_sign_front"] == IGNORE).all()
    assert {k: v.dtype for k, v in t.hard.items()} == dict.fromkeys(iv2018.classifier_names, np.uint8)


def test_pixel_sample_without_label_is_an_error(tiny: Hierarchy):
    with pytest.raises(ValueError, match="'px' sample 'x'.*without a label map"):
        TargetBuilder(tiny)(Sample("px", "x", _image(2, 2), None))


# --------------------------------------------------------------------------- boxes, fill mode
def test_fill_boxes_smaller_box_wins_in_overlap(tiny: Hierarchy):
    # small stop box (2x2) listed FIRST and a big car box (3x5) overlapping it: order must not matter.
    boxes = [Box(3, 1, 4, 2, 0), Box(0, 0, 4, 2, 2)]
    builder = TargetBuilder(tiny, PseudoLabelConfig(box_mode="fill"))
    t = builder(_box_sample(boxes))
    _assert_root_ignored(t)
    assert not t.soft  # fill boxes are hard labels
    i = IGNORE
    assert t.hard["vehicle"].tolist() == [
        [0, 0, 0, 0, 0, i],
        [0, 0, 0, i, i, i],
        [0, 0, 0, i, i, i],
        [i, i, i, i, i, i],
    ]
    stop_px = [[i, i, i, i, i, i], [i, i, i, 0, 0, i], [i, i, i, 0, 0, i], [i, i, i, i, i, i]]
    assert t.hard["front"].tolist() == stop_px  # stop = class 0 of "front"
    assert t.hard["sign"].tolist() == stop_px  # front = class 0 of "sign"


def test_fill_equal_areas_later_box_wins(tiny: Hierarchy):
    dist = box_distribution(tiny, "bx", [Box(0, 0, 1, 0, 0), Box(1, 0, 2, 0, 1)], (1, 3), mode="fill")
    t = weak_targets(tiny, dist)
    assert t.hard["front"].tolist() == [[0, 1, 1]]  # stop, yield (later, same area), yield


# --------------------------------------------------------------------------- boxes, multi-hot (IV 2019)
def test_multihot_overlap_is_half_half_and_void_outside(tiny: Hierarchy):
    # stop box columns 0..2, yield box columns 2..4 of a 1x6 image: column 2 is the overlap, 5 is outside.
    dist = box_distribution(tiny, "bx", [Box(0, 0, 2, 0, 0), Box(2, 0, 4, 0, 1)], (1, 6))
    node_mass = _dense(dist)[:, 0, :]  # nodes x W
    assert dist.nodes == ("stop", "yield")
    np.testing.assert_allclose(node_mass, [[1, 1, 0.5, 0, 0, 0], [0, 0, 0.5, 1, 1, 0]])
    t = weak_targets(tiny, dist)
    _assert_root_ignored(t)
    assert set(t.soft) == {"sign", "front"}  # nothing projects onto "vehicle"
    np.testing.assert_allclose(_dense(t.soft["front"])[:, 0, :], [[1, 1, 0.5, 0, 0, 0], [0, 0, 0.5, 1, 1, 0]])
    np.testing.assert_allclose(_dense(t.soft["sign"])[:, 0, :], [[1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]])
    assert t.soft["front"].valid.tolist() == [[True] * 5 + [False]]
    assert (t.hard["front"] == IGNORE).all() and (t.hard["vehicle"] == IGNORE).all()


def test_multihot_projects_each_box_onto_its_own_classifiers(tiny: Hierarchy):
    # stop (columns 0..1) and car (columns 1..2) overlap at column 1: node mass 1/2 stop, 1/2 car there.
    t = weak_targets(tiny, box_distribution(tiny, "bx", [Box(0, 0, 1, 0, 0), Box(1, 0, 2, 0, 2)], (1, 4)))
    front, vehicle, sign = t.soft["front"], t.soft["vehicle"], t.soft["sign"]
    np.testing.assert_allclose(_dense(front)[:, 0, :], [[1, 1, 0, 0], [0, 0, 0, 0]])  # renormalised within "front"
    np.testing.assert_allclose(_dense(vehicle)[:, 0, :], [[0, 1, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(_dense(sign)[:, 0, :], [[1, 1, 0, 0], [0, 0, 0, 0]])
    # the mass under the classifier before renormalisation: 1 alone, 1/2 in the overlap
    np.testing.assert_allclose(np.append(front.mass, 0)[front.index[0]], [1, 0.5, 0, 0])
    np.testing.assert_allclose(np.append(vehicle.mass, 0)[vehicle.index[0]], [0, 0.5, 1, 0])


def test_multihot_min_mass_threshold(tiny: Hierarchy):
    # one stop box and two car boxes over the same pixel: 1/3 of the mass lies under "sign" and "front".
    boxes = [Box(0, 0, 0, 0, 0), Box(0, 0, 0, 0, 2), Box(0, 0, 1, 0, 2)]
    dist = box_distribution(tiny, "bx", boxes, (1, 2))
    np.testing.assert_allclose(_dense(dist)[:, 0, 0], [1 / 3, 2 / 3])
    assert set(weak_targets(tiny, dist, min_mass=0.01).soft) == {"sign", "front", "vehicle"}
    strict = weak_targets(tiny, dist, min_mass=0.4)  # 1/3 < 0.4 <= 2/3
    assert set(strict.soft) == {"vehicle"}
    assert strict.soft["vehicle"].valid.tolist() == [[True, True]]
    # a dense pseudo label with 0.005 mass under "front" is dropped at the default 0.01
    mass = np.array([[[0.005]], [[0.995]]])  # stop, car at one pixel
    t = weak_targets(tiny, NodeDistribution.from_mass(mass, ("stop", "car")))
    assert set(t.soft) == {"vehicle"}


def test_box_mapped_to_inner_node_and_ignored_ids(tiny: Hierarchy):
    # native 3 -> inner node "front": teaches "sign" (front) but nothing below it; native 4 -> null: no label.
    t = weak_targets(tiny, box_distribution(tiny, "bx", [Box(0, 0, 0, 0, 3), Box(1, 0, 1, 0, 4)], (1, 2)))
    assert set(t.soft) == {"sign"}
    assert t.soft["sign"].valid.tolist() == [[True, False]]


def test_fine_masks_replace_rectangles(tiny: Hierarchy):
    mask = np.array([[True, False, False], [False, True, False]])
    dist = box_distribution(tiny, "bx", [Box(0, 0, 2, 1, 2)], (2, 3), masks=[mask])
    t = weak_targets(tiny, dist)
    assert t.soft["vehicle"].valid.tolist() == mask.tolist()
    gen = BoxGenerator(tiny, "fill", masks=lambda sample: [mask])
    t = weak_targets(tiny, gen(_box_sample([Box(0, 0, 2, 1, 5)], 2, 3)))
    assert t.hard["vehicle"].tolist() == [[1, IGNORE, IGNORE], [IGNORE, 1, IGNORE]]  # bus


def test_box_errors_name_dataset_and_value(tiny: Hierarchy):
    with pytest.raises(PseudoLabelError, match=r"'bx'.*unknown box label 9"):
        box_distribution(tiny, "bx", [Box(0, 0, 0, 0, 9)], (2, 2))
    with pytest.raises(PseudoLabelError, match=r"'bx' box 0.*outside the 2x2 image"):
        box_distribution(tiny, "bx", [Box(0, 0, 2, 0, 0)], (2, 2))
    with pytest.raises(ValueError, match="mode must be one of"):
        box_distribution(tiny, "bx", [], (2, 2), mode="boxes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="box_mode"):
        PseudoLabelConfig(box_mode="soft")  # type: ignore[arg-type]


def test_gtsdb_box_teaches_front_and_sign_class(iv2018: Hierarchy):
    t = TargetBuilder(iv2018)(_box_sample([Box(1, 1, 2, 2, 14)], 4, 4, "gtsdb"))  # 14 = stop
    _assert_root_ignored(t)
    assert set(t.soft) == {"traffic_sign", "traffic_sign_front"}
    front = t.soft["traffic_sign_front"]
    stop = iv2018.classifier("traffic_sign_front").classes.index("sign-stop")
    assert front.table.shape == (1, 43) and front.table[0, stop] == 1
    assert front.valid.sum() == 4
    assert t.soft["traffic_sign"].table.tolist() == [[1.0, 0.0]]  # front


# --------------------------------------------------------------------------- image-level tags
def test_tags_uniform_tiled_over_image(tiny: Hierarchy):
    t = TargetBuilder(tiny)(_tag_sample(("car", "stop sign")))
    _assert_root_ignored(t)
    for name in ("sign", "front", "vehicle"):
        assert t.soft[name].valid.all()  # tiled over the whole image
    np.testing.assert_allclose(_dense(t.soft["vehicle"])[:, 1, 2], [1, 0])  # mass 1/2 under vehicle, all on car
    np.testing.assert_allclose(t.soft["vehicle"].mass, [0.5])
    t = TargetBuilder(tiny)(_tag_sample(("bus", "car")))
    np.testing.assert_allclose(_dense(t.soft["vehicle"]), np.full((2, 2, 3), 0.5))
    assert set(t.soft) == {"vehicle"}


def test_tags_train_only_untaught_classifiers_when_asked():
    """Weak-only hierarchy: the per-pixel sets call truck / bus / train "vehicle", so only the vehicle
    classifier has classes that tags alone teach; "untaught" leaves the human classifier (person and
    rider both labelled per pixel) to the per-pixel sets, while boxes and per-pixel data are unaffected."""
    weak_only = load_hierarchy(HIERARCHIES / "iv2019_weak_only.yaml")
    assert untaught_classifiers(weak_only) == {"vehicle"}
    assert untaught_classifiers(load_hierarchy(HIERARCHIES / "iv2018.yaml")) == frozenset()
    sample = Sample("openscapes", "t", _image(2, 3), None, tags=("person", "bus"))
    every = TargetBuilder(weak_only)(sample)
    assert set(every.soft) == {"human", "vehicle"}
    only = TargetBuilder(weak_only, PseudoLabelConfig(tag_classifiers="untaught"))(sample)
    assert set(only.soft) == {"vehicle"} and only.from_tags
    np.testing.assert_array_equal(only.soft["vehicle"].index, every.soft["vehicle"].index)
    assert (only.hard["human"] == IGNORE).all()
    index = np.array([[0, 1, -1], [1, 0, 0]], np.int32)
    hard = NodeDistribution(("person", "bus"), index, np.eye(2, dtype=np.float32), hard=True)
    builder = TargetBuilder(weak_only, PseudoLabelConfig(tag_classifiers="untaught"))
    assert (builder.weak_targets(hard, from_tags=True).hard["human"] == IGNORE).all()
    assert (builder.weak_targets(hard, from_tags=False).hard["human"] != IGNORE).any()  # not from tags: kept
    named = TargetBuilder(weak_only, PseudoLabelConfig(tag_classifiers=("human",)))(sample)
    assert set(named.soft) == {"human"}
    control = TargetBuilder(weak_only, PseudoLabelConfig(tag_classifiers=()))(sample)  # [] : images only
    assert not control.soft and all((v == IGNORE).all() for v in control.hard.values())
    with pytest.raises(ValueError, match=r"pseudo_labels.tag_classifiers: expected one of \['all', 'untaught'\]"):
        PseudoLabelConfig(tag_classifiers="taught")
    with pytest.raises(ValueError, match=r"\['humans'\] not classifiers of hierarchy 'iv2019_weak_only'"):
        TargetBuilder(weak_only, PseudoLabelConfig(tag_classifiers=("vehicle", "humans")))


def test_tag_distribution_counts_each_class_once(tiny: Hierarchy):
    dist = UniformTagGenerator(tiny)(_tag_sample(("car", "vehicle", "car")))
    assert dist.nodes == ("car", "vehicle")
    np.testing.assert_allclose(dist.table, [[0.5, 0.5]])
    # mass on the inner node "vehicle" teaches no vehicle class: vehicle target is car with mass 1/2
    t = weak_targets(tiny, dist)
    np.testing.assert_allclose(t.soft["vehicle"].table, [[1, 0]])
    np.testing.assert_allclose(t.soft["vehicle"].mass, [0.5])


def test_no_usable_tags_means_no_supervision(tiny: Hierarchy):
    for tags in ((), ("cat",)):
        t = TargetBuilder(tiny)(_tag_sample(tags))
        _assert_root_ignored(t)
        assert not t.soft and all((v == IGNORE).all() for v in t.hard.values())


def test_unknown_tag_names_dataset_and_tag(tiny: Hierarchy):
    with pytest.raises(PseudoLabelError, match=r"dataset 'tg': unknown tag 'giraffe'"):
        TargetBuilder(tiny)(_tag_sample(("car", "giraffe")))


# --------------------------------------------------------------------------- the generator seam
def test_custom_generator_with_precomputed_node_ids(tiny: Hierarchy):
    class Precomputed:  # e.g. a pseudo-label PNG of hierarchy class ids, 255 = void
        def __call__(self, sample: Sample) -> NodeDistribution:
            return NodeDistribution.from_node_ids(np.array([[5, 8], [255, 4]]), tiny)

    assert isinstance(Precomputed(), PseudoLabelGenerator)
    t = TargetBuilder(tiny, generators={"tg": Precomputed()})(_tag_sample(("car",), 2, 2))
    _assert_root_ignored(t)
    assert not t.soft  # hard node labels -> hard targets
    assert t.hard["sign"].tolist() == [[0, IGNORE], [IGNORE, 1]]  # stop -> front; back
    assert t.hard["front"].tolist() == [[0, IGNORE], [IGNORE, IGNORE]]
    assert t.hard["vehicle"].tolist() == [[IGNORE, 1], [IGNORE, IGNORE]]
    with pytest.raises(PseudoLabelError, match=r"ids \[42\]"):
        NodeDistribution.from_node_ids(np.array([[42]]), tiny)
    with pytest.raises(ValueError, match="per-pixel labels"):
        TargetBuilder(tiny, generators={"px": Precomputed()})


def test_generator_output_must_match_image_size(tiny: Hierarchy):
    def wrong(sample: Sample) -> NodeDistribution:
        return NodeDistribution.void((1, 1))

    with pytest.raises(ValueError, match="pseudo label is"):
        TargetBuilder(tiny, generators={"tg": wrong})(_tag_sample(("car",)))


def test_dense_mass_is_palette_encoded(tiny: Hierarchy):
    mass = np.zeros((2, 3, 4))
    mass[0, :, :2] = 2.0  # stop, left half
    mass[1, :, 1:3] = 2.0  # car, overlapping column 1
    dist = NodeDistribution.from_mass(mass, ("stop", "car"))
    assert dist.table.shape[0] == 3  # stop, stop+car, car
    np.testing.assert_allclose(_dense(dist)[:, 0], [[1, 0.5, 0, 0], [0, 0.5, 1, 0]])
    assert (dist.index[:, 3] == -1).all()


# --------------------------------------------------------------------------- collation
def test_collate_shapes_dtypes_and_offsets(tiny: Hierarchy):
    builder = TargetBuilder(tiny)
    pixel = builder(Sample("px", "p", _image(2, 3), np.array([[0, 4, 7], [5, 6, 1]], np.uint8)))
    tags = builder(_tag_sample(("car", "bus")))
    boxes = builder(_box_sample([Box(0, 0, 0, 0, 2), Box(1, 0, 1, 1, 0)], 2, 3))
    batch = collate_targets([pixel, tags, boxes])
    assert batch.weak.tolist() == [False, True, True] and batch.weak.dtype == torch.bool
    assert batch.size == (2, 3) and batch.batch_size == 3
    assert set(batch.hard) == set(tiny.classifier_names)
    for t in batch.hard.values():  # compact as collated (what the loader hands over and copies)
        assert t.dtype == torch.uint8 and t.shape == (3, 2, 3)
    moved = batch.to("cpu")  # on the device: int64, as the loss indexes with them
    assert all(t.dtype == torch.int64 for t in moved.hard.values())
    assert all(s.index.dtype == torch.int64 for s in moved.soft.values())
    assert torch.equal(moved.hard["root"], batch.hard["root"].long())
    assert torch.equal(moved.soft["vehicle"].index, batch.soft["vehicle"].index.long())
    assert batch.flags() == (True, True, False)  # weak, tags, box cores: read on the host
    assert batch.hard["root"][0].tolist() == [[0, 1, IGNORE], [2, 2, 1]]
    assert (batch.hard["root"][1:] == IGNORE).all()
    assert set(batch.soft) == {"vehicle", "sign", "front"}  # soft only where some sample has any
    vehicle = batch.soft["vehicle"]
    assert vehicle.index.dtype == torch.int32 and vehicle.index.shape == (3, 2, 3)
    assert vehicle.table.dtype == torch.float32 and vehicle.table.shape == (2, 2)  # tags row, box row
    assert (vehicle.index[0] == -1).all() and (vehicle.index[1] == 0).all()
    assert vehicle.index[2].tolist() == [[1, -1, -1], [-1, -1, -1]]  # offset by the tags sample's table
    assert vehicle.table.tolist() == [[0.5, 0.5], [1.0, 0.0]]
    assert (batch.soft["front"].index[:2] == -1).all()
    with pytest.raises(ValueError, match="share H x W"):
        collate_targets([pixel, builder(_tag_sample(("car",), 3, 3))])


def test_sample_targets_validation():
    ok = np.full((2, 2), IGNORE, np.uint8)
    with pytest.raises(ValueError, match="kind"):
        SampleTargets("boxes", {"root": ok})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        SampleTargets("pixel", {"root": ok.astype(np.int64)})
    with pytest.raises(ValueError, match="share one H x W"):
        SampleTargets("pixel", {"root": ok, "a": np.zeros((2, 3), np.uint8)})


def test_flat_baseline_can_let_boxes_train_its_root():
    """A flat hierarchy has only a root: with supervise_root, GTSDB boxes reach it; by default they don't."""
    flat = load_hierarchy(HIERARCHIES / "iv2018_flat.yaml")
    sample = Sample("gtsdb", "g", _image(4, 6), None, boxes=(Box(1, 1, 3, 2, 14),))
    default = TargetBuilder(flat)(sample)
    assert not default.soft and (default.hard["root"] == IGNORE).all()
    config = PseudoLabelConfig(box_mode="fill", supervise_root=True)
    flat_targets = TargetBuilder(flat, config)(sample)
    root = flat_targets.hard["root"]
    stop = flat.classifier("root").classes.index("sign-stop")
    assert (root[1:3, 1:4] == stop).all() and (root[0] == IGNORE).all() and (root[:, 0] == IGNORE).all()


# --------------------------------------------------------------------------- box cores teach the root
@pytest.mark.parametrize("mode", ["multihot", "fill"])
def test_box_core_teaches_the_root_the_boxes_root_class_at_its_centre_only(tiny: Hierarchy, mode: str):
    # a 10x10 stop box in a 12x12 image; core 0.1 of its area: the centred 3x3 (round(10 * 0.316) = 3)
    sample = _box_sample([Box(1, 1, 10, 10, 0)], 12, 12)
    t = TargetBuilder(tiny, PseudoLabelConfig(box_mode=mode, box_core=0.1))(sample)
    sign = tiny.classifier("root").classes.index("sign")
    root = t.hard["root"]
    assert (root[4:7, 4:7] == sign).all()
    assert (root == sign).sum() == 9 and (root[root != sign] == IGNORE).all()
    # the sub-classifiers still learn from the whole box, core or not
    front = t.hard["front"] if mode == "fill" else _dense(t.soft["front"]).argmax(0)
    valid = (t.hard["front"] != IGNORE) if mode == "fill" else t.soft["front"].valid
    assert valid.sum() == 100 and (front[valid] == 0).all()
    # the default (the papers' rule): no root target from boxes at all
    _assert_root_ignored(TargetBuilder(tiny, PseudoLabelConfig(box_mode=mode))(sample))


def test_box_core_where_overlapping_boxes_disagree_on_the_root_class_is_ignored(tiny: Hierarchy):
    # a stop box and a car box with the same core region: sign vs vehicle at the root -> no root target;
    # a second stop box overlapping the first one's core: both say "sign" -> the root target stays.
    boxes = [Box(0, 0, 9, 9, 0), Box(0, 0, 9, 9, 2), Box(20, 0, 29, 9, 0), Box(22, 2, 27, 7, 1)]
    dist = box_distribution(tiny, "bx", boxes, (10, 30), core=0.1)
    root = weak_targets(tiny, dist).hard["root"]
    sign = tiny.classifier("root").classes.index("sign")
    assert (root[:, :10] == IGNORE).all()
    assert (root[3:6, 23:26] == sign).all() and (root == sign).sum() == 9  # the yield core lies inside


def test_box_core_survives_warping_into_a_crop_and_is_validated(tiny: Hierarchy):
    from dataclasses import replace

    dist = box_distribution(tiny, "bx", [Box(1, 1, 10, 10, 0)], (12, 12), core=0.1)
    shifted = replace(dist, index=np.roll(dist.index, 2, axis=1))  # what a crop's warp does to the index
    root = weak_targets(tiny, shifted).hard["root"]
    assert (root[4:7, 6:9] != IGNORE).all() and (root != IGNORE).sum() == 9
    with pytest.raises(ValueError, match="root_rows: expected 1 booleans"):
        NodeDistribution(("stop",), np.zeros((2, 2), np.int32), np.ones((1, 1), np.float32), root_rows=np.ones(2, bool))
    with pytest.raises(ValueError, match=r"pseudo_labels.box_core: expected a number in \[0, 1\)"):
        PseudoLabelConfig(box_core=1.0)
    with pytest.raises(ValueError, match=r"core must be in \[0, 1\)"):
        box_distribution(tiny, "bx", [Box(1, 1, 10, 10, 0)], (12, 12), core=-0.1)
