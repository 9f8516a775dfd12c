"""The hierarchical loss against values computed by hand from explicit log-softmax arithmetic.

Tiny hierarchy: root = road | sign | vehicle; sign = front | back; front = stop | yield; vehicle = car | bus.
Every classifier has its logits given per pixel; ``ce(v, k) = log(sum_i e^v_i) - v_k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import make_tags
from tiny_hierarchy import load_tiny

from hiseg_ros.hierarchy import IGNORE, Hierarchy, flatten_hierarchy, load_hierarchy
from training import REPO
from training.data.augment import AugmentConfig
from training.data.readers.base import Box, Sample
from training.data.readers.image_tags import ImageTagsDataset
from training.fit.batches import make_sample
from training.fit.loss import HierarchicalLoss, default_weights
from training.labels.collate import collate_targets
from training.labels.node_distribution import NodeDistribution
from training.labels.targets import PseudoLabelConfig, SampleTargets, SoftTarget, TargetBuilder

HIERARCHIES = REPO / "config" / "hierarchies"
I = IGNORE  # noqa: E741


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return load_tiny(tmp_path_factory.mktemp("h"))


def ce(values: list[float], k: int) -> float:
    """Hard cross-entropy of one pixel, by hand."""
    return math.log(sum(math.exp(v) for v in values)) - values[k]


def row(*pixels: list[float]) -> list:
    """One image row of pixels (each a list of C logits) as a 1 x C x 1 x W nested list."""
    return [[[[p[c] for p in pixels]] for c in range(len(pixels[0]))]]


def logits(tiny: Hierarchy, batch: int, h: int, w: int, **given: list) -> dict[str, torch.Tensor]:
    """Zero logits per classifier, replaced by ``given`` (nested B x C x h x w lists); all require grad."""
    out = {}
    for name, classes in tiny.classifier_sizes:
        value = torch.tensor(given[name]) if name in given else torch.zeros(batch, classes, h, w)
        out[name] = value.float().requires_grad_()
    return out


def targets(tiny: Hierarchy, kind: str, shape: tuple[int, int], soft=None, **hard: list) -> SampleTargets:
    maps = {n: np.full(shape, IGNORE, np.uint8) for n in tiny.classifier_names}
    maps.update({n: np.array(v, np.uint8) for n, v in hard.items()})
    soft_targets = {
        n: SoftTarget(np.array(i, np.int32), np.array(t, np.float32), np.array(m, np.float32))
        for n, (i, t, m) in (soft or {}).items()
    }
    return SampleTargets(kind, maps, soft_targets)  # type: ignore[arg-type]


def zero_grad(t: torch.Tensor) -> bool:
    return t.grad is None or bool((t.grad == 0).all())


# --------------------------------------------------------------------------- per-pixel term
def test_ignore_pixels_are_excluded_from_the_average(tiny: Hierarchy):
    loss = HierarchicalLoss(tiny)
    lg = logits(tiny, 1, 1, 3, root=row([2, 0, 0], [0, 1, 0], [5, -5, 9]))
    batch = collate_targets([targets(tiny, "pixel", (1, 3), root=[[0, 2, I]])])
    out = loss(lg, batch)
    expected = (ce([2, 0, 0], 0) + ce([0, 1, 0], 2)) / 2  # the IGNORE pixel neither adds nor counts
    assert expected == pytest.approx((math.log(math.e**2 + 2) - 2 + math.log(2 + math.e)) / 2)
    assert out.per_classifier["root"].item() == pytest.approx(expected, rel=1e-6)
    assert out.total.item() == pytest.approx(1.0 * expected, rel=1e-6)
    assert out.pixels["root"] == (2, 0)
    assert all(out.per_classifier[n].item() == 0 for n in ("sign", "vehicle", "front"))
    out.total.backward()
    grad = lg["root"].grad
    assert (grad[0, :, 0, 2] == 0).all() and (grad[0, :, 0, :2] != 0).any()


def test_logits_are_upsampled_bilinearly_to_the_target(tiny: Hierarchy):
    # 1x2 logits -> 1x4 targets, align_corners=False: columns take weights (1,0), (3/4,1/4), (1/4,3/4), (0,1).
    a, b = [2.0, 0.0, 1.0], [0.0, 4.0, 0.0]
    lg = logits(tiny, 1, 1, 2, root=row(a, b))
    out = HierarchicalLoss(tiny)(lg, collate_targets([targets(tiny, "pixel", (1, 4), root=[[0, 0, 0, 0]])]))
    cols = [
        [wa * x + wb * y for x, y in zip(a, b, strict=True)] for wa, wb in ((1, 0), (0.75, 0.25), (0.25, 0.75), (0, 1))
    ]
    expected = sum(ce(c, 0) for c in cols) / 4
    assert out.per_classifier["root"].item() == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- P1 and P2 averaged separately
def test_pixel_and_weak_pixels_are_averaged_separately(tiny: Hierarchy):
    # sample 0 (per-pixel): one vehicle label; sample 1 (weak, e.g. "fill" boxes): two, where the root says vehicle.
    pixel = targets(tiny, "pixel", (1, 2), vehicle=[[0, I]])
    weak = targets(tiny, "weak", (1, 2), vehicle=[[0, 1]])
    root = [row([0, 0, 0], [0, 0, 0])[0], row([0, 0, 3], [1, 0, 2])[0]]  # sample 0: root says road (irrelevant)
    vehicle = [row([1, 0], [7, 7])[0], row([0, 0], [0, 2])[0]]
    lg = logits(tiny, 2, 1, 2, root=root, vehicle=vehicle)
    out = HierarchicalLoss(tiny)(lg, collate_targets([pixel, weak]))
    p1 = ce([1, 0], 0) / 1
    p2 = (ce([0, 0], 0) + ce([0, 2], 1)) / 2
    assert p1 + p2 != pytest.approx((ce([1, 0], 0) + ce([0, 0], 0) + ce([0, 2], 1)) / 3)
    assert out.per_classifier["vehicle"].item() == pytest.approx(p1 + p2, rel=1e-6)
    assert out.pixels["vehicle"] == (1, 2)
    assert out.total.item() == pytest.approx(0.1 * (p1 + p2), rel=1e-6)


def test_weak_hard_and_soft_pixels_share_one_average(tiny: Hierarchy):
    # weak "front" targets: a hard one at pixel 0 and a soft [1/2, 1/2] one at pixel 1; "sign" says front at both.
    weak = targets(tiny, "weak", (1, 2), front=[[1, I]], soft={"front": ([[-1, 0]], [[0.5, 0.5]], [1.0])})
    lg = logits(tiny, 1, 1, 2, sign=row([1, 0], [1, 0]), front=row([0, 1], [2, 0]))
    out = HierarchicalLoss(tiny)(lg, collate_targets([weak]))
    soft = 0.5 * ce([2, 0], 0) + 0.5 * ce([2, 0], 1)
    assert out.per_classifier["front"].item() == pytest.approx((ce([0, 1], 1) + soft) / 2, rel=1e-6)
    assert out.pixels["front"] == (0, 2)


# --------------------------------------------------------------------------- conditional accumulation
def test_soft_weak_term_follows_the_parent_decision(tiny: Hierarchy):
    # One weak pixel with a soft "front" target [1/4, 3/4] (mass 1/2 under "front").
    batch = collate_targets([targets(tiny, "weak", (1, 1), soft={"front": ([[0]], [[0.25, 0.75]], [0.5])})])
    front = row([1, 3])
    says_front = logits(tiny, 1, 1, 1, sign=row([2, 0]), front=front)
    out = HierarchicalLoss(tiny)(says_front, batch)
    lse = math.log(math.e**1 + math.e**3)
    expected = -(0.25 * (1 - lse) + 0.75 * (3 - lse))
    assert out.per_classifier["front"].item() == pytest.approx(expected, rel=1e-6)
    assert out.pixels["front"] == (0, 1)
    assert out.total.item() == pytest.approx(0.1 * expected, rel=1e-6)
    out.total.backward()
    assert not zero_grad(says_front["front"])
    assert zero_grad(says_front["sign"])  # the decision is detached: the parent learns nothing from it
    assert zero_grad(says_front["root"])

    says_back = logits(tiny, 1, 1, 1, sign=row([0, 2]), front=front)  # the same pixel, "sign" now says back
    out = HierarchicalLoss(tiny)(says_back, batch)
    assert out.per_classifier["front"].item() == 0 and out.pixels["front"] == (0, 0)
    out.total.backward()
    assert all(torch.isfinite(t.grad).all() and zero_grad(t) for t in says_back.values())


def test_root_decision_gates_classifiers_under_root(tiny: Hierarchy):
    # weak vehicle target "bus" at two pixels; the root says vehicle at pixel 0 only.
    batch = collate_targets([targets(tiny, "weak", (1, 2), vehicle=[[1, 1]])])
    vehicle = row([0, 1], [3, 0])
    lg = logits(tiny, 1, 1, 2, root=row([0, 0, 1], [1, 0, 0]), vehicle=vehicle)
    out = HierarchicalLoss(tiny)(lg, batch)
    assert out.per_classifier["vehicle"].item() == pytest.approx(ce([0, 1], 1), rel=1e-6)
    assert out.pixels["vehicle"] == (0, 1)
    out.total.backward()
    assert (lg["vehicle"].grad[0, :, 0, 1] == 0).all() and (lg["vehicle"].grad[0, :, 0, 0] != 0).all()
    flipped = logits(tiny, 1, 1, 2, root=row([0, 0, 1], [0, 0, 1]), vehicle=vehicle)  # now vehicle at both
    out = HierarchicalLoss(tiny)(flipped, batch)
    assert out.per_classifier["vehicle"].item() == pytest.approx((ce([0, 1], 1) + ce([3, 0], 1)) / 2, rel=1e-6)


def test_per_pixel_samples_ignore_the_parent_decision(tiny: Hierarchy):
    batch = collate_targets([targets(tiny, "pixel", (1, 1), vehicle=[[1]])])
    lg = logits(tiny, 1, 1, 1, root=row([5, 0, 0]), vehicle=row([0, 1]))  # the root says road
    out = HierarchicalLoss(tiny)(lg, batch)
    assert out.per_classifier["vehicle"].item() == pytest.approx(ce([0, 1], 1), rel=1e-6)


def test_loss_min_mass_drops_light_soft_targets(tiny: Hierarchy):
    batch = collate_targets([targets(tiny, "weak", (1, 1), soft={"front": ([[0]], [[0.25, 0.75]], [0.5])})])
    lg = logits(tiny, 1, 1, 1, sign=row([2, 0]), front=row([1, 3]))
    assert HierarchicalLoss(tiny, min_mass=0.5)(lg, batch).pixels["front"] == (0, 1)
    assert HierarchicalLoss(tiny, min_mass=0.6)(lg, batch).pixels["front"] == (0, 0)


# --------------------------------------------------------------------------- weights
def test_weights_default_and_override(tiny: Hierarchy):
    assert default_weights(tiny) == {"root": 1.0, "sign": 0.1, "vehicle": 0.1, "front": 0.1}
    batch = collate_targets([targets(tiny, "pixel", (1, 1), root=[[2]], vehicle=[[0]], sign=[[1]])])
    lg = logits(tiny, 1, 1, 1, root=row([0, 1, 2]), vehicle=row([1, 1]), sign=row([3, 0]))
    lr, lv, ls = ce([0, 1, 2], 2), ce([1, 1], 0), ce([3, 0], 1)
    out = HierarchicalLoss(tiny)(lg, batch)
    assert out.total.item() == pytest.approx(1.0 * lr + 0.1 * lv + 0.1 * ls, rel=1e-6)
    out = HierarchicalLoss(tiny, weights={"root": 0.5, "vehicle": 2.0})(lg, batch)
    assert out.total.item() == pytest.approx(0.5 * lr + 2.0 * lv + 0.1 * ls, rel=1e-6)
    assert out.per_classifier["vehicle"].item() == pytest.approx(lv, rel=1e-6)  # reported unweighted
    with pytest.raises(ValueError, match="unknown classifier 'rider'"):
        HierarchicalLoss(tiny, weights={"rider": 1.0})


def test_class_weights_weigh_pixels_by_their_target_class(tiny: Hierarchy):
    # root targets road, vehicle, road; vehicle weighted 3: (1 ce0 + 3 ce1 + 1 ce2) / (1 + 3 + 1)
    px = ([2, 0, 0], [0, 1, 0], [0, 0, 1])
    batch = collate_targets([targets(tiny, "pixel", (1, 3), root=[[0, 2, 0]])])
    out = HierarchicalLoss(tiny, class_weights={"root": {"vehicle": 3.0}})(logits(tiny, 1, 1, 3, root=row(*px)), batch)
    expected = (ce(px[0], 0) + 3 * ce(px[1], 2) + ce(px[2], 0)) / 5
    assert out.per_classifier["root"].item() == pytest.approx(expected, rel=1e-6)
    assert out.pixels["root"] == (3, 0)  # pixels are still counted, not weighted
    plain = HierarchicalLoss(tiny)(logits(tiny, 1, 1, 3, root=row(*px)), batch)
    assert plain.per_classifier["root"].item() == pytest.approx(
        sum(ce(p, k) for p, k in zip(px, (0, 2, 0), strict=True)) / 3
    )


def test_class_weights_of_a_soft_target_are_its_mean_class_weight(tiny: Hierarchy):
    # one weak pixel whose front target is 0.25 stop + 0.75 yield, yield weighted 5: weight 0.25 + 3.75 = 4;
    # with one pixel the weighted average is the plain soft cross entropy, with two the weights matter
    soft = {"front": ([[0, 1]], [[0.25, 0.75], [1.0, 0.0]], [1.0, 1.0])}
    batch = collate_targets([targets(tiny, "weak", (1, 2), soft=soft)])
    lg = logits(tiny, 1, 1, 2, sign=row([2, 0], [2, 0]), front=row([1, 3], [0, 2]))
    out = HierarchicalLoss(tiny, class_weights={"front": {"yield": 5.0}})(lg, batch)
    first = 0.25 * ce([1, 3], 0) + 0.75 * ce([1, 3], 1)
    second = ce([0, 2], 0)
    assert out.per_classifier["front"].item() == pytest.approx((4 * first + 1 * second) / 5, rel=1e-6)
    with pytest.raises(ValueError, match="'lorry' is not one of its classes"):
        HierarchicalLoss(tiny, class_weights={"vehicle": {"lorry": 2.0}})
    with pytest.raises(ValueError, match="must be > 0"):
        HierarchicalLoss(tiny, class_weights={"vehicle": {"bus": 0}})


# --------------------------------------------------------------------------- empty sets, gradients
def test_empty_sets_give_zero_loss_and_finite_gradients(tiny: Hierarchy):
    batch = collate_targets([targets(tiny, "pixel", (2, 2)), targets(tiny, "weak", (2, 2))])
    lg = {n: torch.randn(2, c, 1, 1, requires_grad=True) for n, c in tiny.classifier_sizes}
    out = HierarchicalLoss(tiny)(lg, batch)
    assert out.total.item() == 0 and not torch.isnan(out.total)
    assert all(v.item() == 0 for v in out.per_classifier.values())
    assert all(p == (0, 0) for p in out.pixels.values())
    out.total.backward()
    for t in lg.values():
        assert t.grad is not None and torch.isfinite(t.grad).all() and (t.grad == 0).all()


def test_weak_only_batch_gives_root_no_gradient(tiny: Hierarchy):
    # hard weak targets (as from "fill" boxes) for sign / front at pixel 0 and vehicle at pixel 1
    weak = targets(tiny, "weak", (1, 3), sign=[[0, I, I]], front=[[1, I, I]], vehicle=[[I, 0, I]])
    lg = logits(tiny, 1, 1, 3, root=row([0, 2, 0], [0, 0, 2], [2, 0, 0]), sign=row([1, 0], [1, 0], [1, 0]))
    out = HierarchicalLoss(tiny)(lg, collate_targets([weak]))
    assert out.pixels == {"root": (0, 0), "sign": (0, 1), "vehicle": (0, 1), "front": (0, 1)}
    out.total.backward()
    assert zero_grad(lg["root"])
    for name, pixel in (("sign", 0), ("front", 0), ("vehicle", 1)):
        grad = lg[name].grad[0, :, 0]
        assert (grad[:, pixel] != 0).all()
        assert (grad[:, [p for p in range(3) if p != pixel]] == 0).all()


def test_box_cores_reach_the_root_whatever_it_decides(tiny: Hierarchy):
    """``pseudo_labels.box_core``: a stop box's centre teaches the root "sign" even where it says road."""
    sample = Sample("bx", "b", np.zeros((12, 12, 3), np.uint8), None, boxes=(Box(1, 1, 10, 10, 0),))
    box = TargetBuilder(tiny, PseudoLabelConfig(box_mode="fill", box_core=0.1))(sample)
    road_everywhere = torch.zeros(1, 3, 12, 12)
    road_everywhere[:, 0] = 3.0
    lg = logits(tiny, 1, 12, 12, root=road_everywhere.tolist())
    out = HierarchicalLoss(tiny)(lg, collate_targets([box]))
    assert out.pixels["root"] == (9, 0)  # the 3x3 core, with the per-pixel labels; the other 91 box pixels: none
    assert out.per_classifier["root"].item() == pytest.approx(ce([3.0, 0.0, 0.0], 1), rel=1e-5)
    out.total.backward()
    grad = lg["root"].grad[0]
    assert (grad[:, 4:7, 4:7] != 0).all() and (grad.abs().sum(0) > 0).sum() == 9
    default = TargetBuilder(tiny, PseudoLabelConfig(box_mode="fill"))(sample)
    assert HierarchicalLoss(tiny)(lg, collate_targets([default])).pixels["root"] == (0, 0)
    # pooled: one per-pixel sample with 3 labelled root pixels + the core average to one P1 mean
    pixel = targets(tiny, "pixel", (12, 12), root=np.where(np.arange(144).reshape(12, 12) < 3, 0, I).tolist())
    lg = logits(tiny, 2, 12, 12, root=torch.cat([road_everywhere, road_everywhere]).tolist())
    out = HierarchicalLoss(tiny)(lg, collate_targets([pixel, box]))
    expected = (3 * ce([3.0, 0.0, 0.0], 0) + 9 * ce([3.0, 0.0, 0.0], 1)) / 12
    assert out.pixels["root"] == (12, 0) and out.per_classifier["root"].item() == pytest.approx(expected, rel=1e-5)


def test_iv2018_cityscapes_and_gtsdb_batch(tmp_path: Path):
    h = load_hierarchy(HIERARCHIES / "iv2018.yaml")
    builder = TargetBuilder(h)
    image = np.zeros((8, 16, 3), np.uint8)
    label = np.full((8, 16), 7, np.uint8)  # road
    label[:, 8:] = 20  # traffic sign
    city = builder(Sample("cityscapes", "c", image, label))
    gtsdb = builder(Sample("gtsdb", "g", image, None, boxes=(Box(2, 2, 9, 5, 14), Box(6, 1, 12, 6, 1))))
    batch = collate_targets([city, gtsdb])
    torch.manual_seed(0)
    lg = {n: torch.randn(2, c, 2, 4, requires_grad=True) for n, c in h.classifier_sizes}  # output stride 4
    out = HierarchicalLoss(h)(lg, batch)
    assert torch.isfinite(out.total) and out.total.item() > 0
    assert out.pixels["root"] == (128, 0) and out.pixels["traffic_sign"][0] == 64
    assert out.pixels["drivable"] == (0, 0)  # Cityscapes road is not a drivable class
    out.total.backward()
    assert (lg["root"].grad[1] == 0).all() and (lg["root"].grad[0] != 0).any()
    assert (lg["traffic_sign_front"].grad[0] == 0).all()  # Cityscapes signs do not name a GTSDB class


# --------------------------------------------------------------------------- validation
def test_logits_must_match_the_hierarchy(tiny: Hierarchy):
    loss = HierarchicalLoss(tiny)
    batch = collate_targets([targets(tiny, "pixel", (1, 1))])
    good = logits(tiny, 1, 1, 1)
    with pytest.raises(ValueError, match=r"missing \['front'\], unexpected \['rider'\]"):
        loss({**{k: v for k, v in good.items() if k != "front"}, "rider": torch.zeros(1, 3, 1, 1)}, batch)
    with pytest.raises(ValueError, match=r"logits\['vehicle'\] has 3 channels, classifier 'vehicle'.*has 2 classes"):
        loss({**good, "vehicle": torch.zeros(1, 3, 1, 1)}, batch)
    with pytest.raises(ValueError, match="batch size 2, targets 1"):
        loss({**good, "sign": torch.zeros(2, 2, 1, 1)}, batch)
    with pytest.raises(ValueError, match=r"hard targets of 'vehicle' must be 0\.\.1"):
        loss(good, collate_targets([targets(tiny, "pixel", (1, 1), vehicle=[[2]])]))


# --------------------------------------------------------------------------- tag pixels: the whole path must agree
def _tag_and_box(tiny: Hierarchy, width: int) -> tuple[SampleTargets, SampleTargets]:
    """A "stop sign" tag tiled over a 1 x width image, and a "stop" box (bx id 0) over the same pixels."""
    builder = TargetBuilder(tiny)
    image = np.zeros((1, width, 3), np.uint8)
    tag = builder(Sample("tg", "t", image, None, tags=("stop sign",)))
    box = builder(Sample("bx", "b", image, None, boxes=(Box(0, 0, width - 1, 0, 0),)))
    return tag, box


def test_tag_pixel_counts_only_where_every_ancestor_agrees(tiny: Hierarchy):
    # "sign" says front at both pixels, but the root says sign at pixel 0 only (road at pixel 1).
    tag, box = _tag_and_box(tiny, 2)
    front = row([0, 1], [2, 0])
    given = {"root": row([0, 2, 0], [2, 0, 0]), "sign": row([1, 0], [1, 0]), "front": front}
    lg = logits(tiny, 1, 1, 2, **given)
    out = HierarchicalLoss(tiny)(lg, collate_targets([tag]))
    assert out.pixels["front"] == (0, 1)
    assert out.per_classifier["front"].item() == pytest.approx(ce([0, 1], 0), rel=1e-6)
    out.total.backward()
    assert (lg["front"].grad[0, :, 0, 1] == 0).all() and (lg["front"].grad[0, :, 0, 0] != 0).all()
    # "sign" itself sits under the root only: its tag pixel needs just the root's "sign" (pixel 0)
    assert out.pixels["sign"] == (0, 1)

    # The same pixels from a box keep the IV 2018 gate: the immediate parent ("sign" says front) suffices.
    lg = logits(tiny, 1, 1, 2, **given)
    out = HierarchicalLoss(tiny)(lg, collate_targets([box]))
    assert out.pixels["front"] == (0, 2)
    assert out.per_classifier["front"].item() == pytest.approx((ce([0, 1], 0) + ce([2, 0], 0)) / 2, rel=1e-6)
    out.total.backward()
    assert (lg["front"].grad[0, :, 0, 1] != 0).all()


def test_tag_and_box_samples_of_one_batch_keep_their_own_gates(tiny: Hierarchy):
    tag, box = _tag_and_box(tiny, 2)
    one = {"root": row([0, 2, 0], [2, 0, 0]), "sign": row([1, 0], [1, 0]), "front": row([0, 1], [2, 0])}
    given = {name: [value[0], value[0]] for name, value in one.items()}  # both samples see the same logits
    out = HierarchicalLoss(tiny)(logits(tiny, 2, 1, 2, **given), collate_targets([tag, box]))
    assert out.pixels["front"] == (0, 1 + 2)


def test_tags_reach_a_flat_root_only_where_it_already_decides_a_tagged_class(tiny: Hierarchy):
    flat = flatten_hierarchy(tiny, "tiny_flat")
    leaves = [c.name for c in flat.classes]  # road, back, stop, yield, car, bus
    builder = TargetBuilder(flat, PseudoLabelConfig(supervise_root=True))
    image = np.zeros((1, 4, 3), np.uint8)
    tags = builder(Sample("tg", "t", image, None, tags=("stop sign", "car")))
    decides = [leaves.index(n) for n in ("stop", "car", "road", "yield")]
    root = row(*[[3.0 if c == k else 0.0 for c in range(len(leaves))] for k in decides])
    lg = {"root": torch.tensor(root).requires_grad_()}
    out = HierarchicalLoss(flat)(lg, collate_targets([tags]))
    # Pixels 0 and 1 decide a tagged class and learn that class; road and yield pixels learn nothing.
    assert out.pixels["root"] == (0, 2)
    values = [[3.0 if c == k else 0.0 for c in range(len(leaves))] for k in decides[:2]]
    expected = (ce(values[0], decides[0]) + ce(values[1], decides[1])) / 2
    assert out.per_classifier["root"].item() == pytest.approx(expected, rel=1e-6)
    out.total.backward()
    assert (lg["root"].grad[0, :, 0, 2:] == 0).all() and (lg["root"].grad[0, :, 0, :2] != 0).all()

    # Boxes still reach the flat root on every box pixel, whatever it decides.
    boxes = builder(Sample("bx", "b", image, None, boxes=(Box(0, 0, 3, 0, 0),)))
    out = HierarchicalLoss(flat)({"root": torch.tensor(root)}, collate_targets([boxes]))
    assert out.pixels["root"] == (0, 4)


def test_hard_tag_targets_reach_the_root_only_where_it_decides_them(tiny: Hierarchy):
    # Hard tag-derived root targets (a precomputed tag label map under supervise_root): "sign" at both pixels.
    weak = targets(tiny, "weak", (1, 2), root=[[1, 1]])
    tagged = SampleTargets(weak.kind, weak.hard, from_tags=True)
    lg = logits(tiny, 1, 1, 2, root=row([0, 2, 0], [2, 0, 0]))  # the root says sign, then road
    out = HierarchicalLoss(tiny)(lg, collate_targets([tagged]))
    assert out.pixels["root"] == (0, 1)
    assert out.per_classifier["root"].item() == pytest.approx(ce([0, 2, 0], 1), rel=1e-6)
    assert HierarchicalLoss(tiny)(lg, collate_targets([weak])).pixels["root"] == (0, 2)  # from boxes: both


@dataclass(frozen=True)
class _EveryPixelIsCar:
    """A precomputed-style tag pseudo label (the generator seam): hard "car" on the whole image."""

    def __call__(self, sample: Sample) -> NodeDistribution:
        return NodeDistribution.from_hard(np.zeros(sample.image.shape[:2], np.int32), ["car"])


def test_training_crops_of_tag_images_reach_the_loss_as_tag_derived(tmp_path: Path):
    make_tags(tmp_path, ["a"], ["a,verification,/m/0k4j,1"])  # one image tagged Car
    reader = ImageTagsDataset(tmp_path)
    h = load_hierarchy(HIERARCHIES / "iv2018.yaml")
    cfg = AugmentConfig(crop=(8, 8), scale=(1.0, 1.0))
    for generators in ({}, {"openscapes": _EveryPixelIsCar()}):  # uniform tiling, a configured generator
        builder = TargetBuilder(h, generators=generators)
        _, target = make_sample(reader, 0, "tags", cfg, builder, np.random.default_rng(0))
        assert target.kind == "weak" and target.from_tags, generators
    boxes = TargetBuilder(h)(Sample("gtsdb", "g", np.zeros((4, 4, 3), np.uint8), None, boxes=(Box(0, 0, 1, 1, 14),)))
    assert not boxes.from_tags


# --------------------------------------------------------------------------- dense form (GPU)
def _both_forms(hierarchy: Hierarchy, batch, shapes: dict[str, tuple], **kwargs) -> None:
    """The dense form (every pixel, mask as a factor: what a GPU runs) equals the gathered one:
    total, per-classifier losses, pixel counts and every gradient."""
    torch.manual_seed(0)
    values = {n: 3 * torch.randn(*s) for n, s in shapes.items()}  # decisions vary from pixel to pixel
    results = []
    for dense in (False, True):
        lg = {n: v.clone().requires_grad_() for n, v in values.items()}
        out = HierarchicalLoss(hierarchy, dense=dense, **kwargs)(lg, batch)
        out.total.backward()
        results.append((out, lg))
    (gathered, lg0), (dense, lg1) = results
    assert gathered.total.item() > 0
    assert dense.total.item() == pytest.approx(gathered.total.item(), rel=1e-5)
    for name in hierarchy.classifier_names:
        assert dense.per_classifier[name].item() == pytest.approx(
            gathered.per_classifier[name].item(), rel=1e-5, abs=1e-7
        )
        assert tuple(int(c) for c in dense.pixels[name]) == gathered.pixels[name], name
        torch.testing.assert_close(lg1[name].grad, lg0[name].grad, rtol=1e-4, atol=1e-7)


def test_dense_form_equals_the_gathered_one(tiny: Hierarchy):
    builder = TargetBuilder(tiny, PseudoLabelConfig(box_mode="fill", box_core=0.3))
    image = np.zeros((6, 8, 3), np.uint8)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 8, (6, 8)).astype(np.uint8)
    label[0] = 7  # a void row (id 7: null)
    pixel = builder(Sample("px", "p", image, label))
    tag = builder(Sample("tg", "t", image, None, tags=("stop sign", "car")))
    core = builder(Sample("bx", "b", image, None, boxes=(Box(1, 1, 6, 4, 0), Box(0, 0, 2, 2, 1))))
    soft = TargetBuilder(tiny)(Sample("bx", "b", image, None, boxes=(Box(2, 1, 7, 5, 1), Box(0, 3, 3, 5, 0))))
    batch = collate_targets([pixel, tag, core, soft])
    assert batch.flags() == (True, True, True)
    shapes = {n: (4, c, 3, 4) for n, c in tiny.classifier_sizes}  # upsampled 2x to the targets
    _both_forms(tiny, batch, shapes)
    _both_forms(tiny, batch, shapes, class_weights={"root": {"sign": 4.0}, "front": {"yield": 0.5}})
    _both_forms(tiny, collate_targets([pixel]), shapes | {n: (1, *s[1:]) for n, s in shapes.items()})


def test_dense_form_equals_the_gathered_one_for_tags_on_a_flat_root(tiny: Hierarchy):
    flat = flatten_hierarchy(tiny, "tiny_flat")
    builder = TargetBuilder(flat, PseudoLabelConfig(supervise_root=True))
    image = np.zeros((4, 6, 3), np.uint8)
    tags = builder(Sample("tg", "t", image, None, tags=("stop sign", "car")))
    boxes = builder(Sample("bx", "b", image, None, boxes=(Box(0, 0, 3, 2, 0),)))
    shapes = {n: (2, c, 4, 6) for n, c in flat.classifier_sizes}
    _both_forms(flat, collate_targets([tags, boxes]), shapes, class_weights={"root": {"car": 2.0}})


@pytest.mark.parametrize(
    ("shape", "size"),
    [((2, 5, 3, 4), (6, 8)), ((1, 3, 12, 24), (192, 384)), ((2, 4, 7, 5), (30, 17)), ((1, 2, 4, 4), (4, 9))],
)
def test_upsampling_as_matrix_products_is_interpolate(shape: tuple, size: tuple):
    """The GPU form's upsampling (two products with interpolate's own matrices) is interpolate's,
    forward and backward, also for sizes that are no multiple of the input."""
    from training.fit.loss import _upsample, upsample_matmul

    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(shape[0], shape[1], *size, dtype=torch.float64)
    a, b = upsample_matmul(x, size), _upsample(x, size)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    (ga,) = torch.autograd.grad(a, x, grad)
    (gb,) = torch.autograd.grad(b, x, grad)
    torch.testing.assert_close(ga, gb, rtol=0, atol=1e-11)
