"""hiseg_ros.outputs: masks, colours, overlay, sign instances and the fit resize policy (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from hiseg_ros import outputs
from hiseg_ros.hierarchy import IGNORE, load_hierarchy
from hiseg_ros.outputs import FitTransform
from training import REPO

H, W = 64, 96


@pytest.fixture(scope="module")
def iv2018():
    return load_hierarchy(REPO / "config" / "hierarchies" / "iv2018.yaml")


def _decisions(h, rng):
    per = {name: rng.integers(0, n, (H, W), dtype=np.uint8) for name, n in h.classifier_sizes}
    return per, h.flatten(per)


def _leaf(h, name):
    return h.node(name).id


def test_classifier_masks_shapes_and_ignore(iv2018):
    per, leaf = _decisions(iv2018, np.random.default_rng(1))
    masks = outputs.classifier_masks(iv2018, per, leaf)
    assert list(masks) == list(iv2018.classifier_names)
    for mask in masks.values():
        assert mask.shape == (H, W) and mask.dtype == np.uint8
    np.testing.assert_array_equal(masks["root"], per["root"])
    under_rider = np.isin(leaf, [c.id for c in iv2018.descendant_leaves("rider")])
    np.testing.assert_array_equal(masks["rider"][under_rider], per["rider"][under_rider])
    assert (masks["rider"][~under_rider] == IGNORE).all()


@pytest.mark.parametrize("name", ["iv2018.yaml", "iv2019.yaml"])
def test_classifier_masks_fast_path_equals_the_hierarchy_rule(name):
    """The node's cv2 lookup must give exactly Hierarchy.classifier_masks' numpy lookup, void pixels included."""
    h = load_hierarchy(REPO / "config" / "hierarchies" / name)
    per, leaf = _decisions(h, np.random.default_rng(5))
    leaf[:3] = h.void_value
    fast = outputs.classifier_masks(h, per, leaf)
    slow = h.classifier_masks(per, leaf)
    assert list(fast) == list(slow)
    for key in slow:
        np.testing.assert_array_equal(fast[key], slow[key])


def test_colorize_uses_the_leaf_palette(iv2018):
    _, leaf = _decisions(iv2018, np.random.default_rng(2))
    colored = outputs.colorize(iv2018, leaf)
    assert colored.shape == (H, W, 3) and colored.dtype == np.uint8
    road = leaf == _leaf(iv2018, "road")
    if road.any():
        assert (colored[road] == iv2018.node("road").color).all()
    for y, x in [(0, 0), (10, 20), (H - 1, W - 1)]:
        assert tuple(int(c) for c in colored[y, x]) == next(c.color for c in iv2018.leaves if c.id == leaf[y, x])


def _sign_scene(h):
    """Sky background, two sign regions of different classes and one tiny region."""
    leaf = np.full((H, W), _leaf(h, "sky"), dtype=np.uint8)
    s30, s50 = _leaf(h, "sign-speed-limit-30"), _leaf(h, "sign-speed-limit-50")
    stop = h.descendant_leaves("traffic-sign-front")[14].id
    # region A: rows 5..14, cols 10..21 (10 x 12 = 120 px): 100 px speed-limit-30, 20 px speed-limit-50
    leaf[5:15, 10:22] = s30
    leaf[5:7, 10:20] = s50
    # region B: rows 30..49, cols 50..69 (400 px), all "stop"-ish class 14, with a traffic-sign-back hole
    leaf[30:50, 50:70] = stop
    leaf[40, 60] = _leaf(h, "traffic-sign-back")
    # region C: 2 x 2 = 4 px, below the minimum area
    leaf[60:62, 0:2] = s30
    return leaf, s30, stop


def test_find_signs_splits_touching_signs_of_different_classes(iv2018):
    """The default split: one instance per leaf within a sign region, so region A (a speed limit 30
    with a speed limit 50 strip on top) gives two signs, each with its own box and its share of A."""
    leaf, _, _ = _sign_scene(iv2018)
    lut = outputs.sign_leaf_lut(iv2018, "traffic-sign-front")
    signs = outputs.find_signs(iv2018, leaf, lut, min_area=10)
    assert [(d.x, d.y, d.width, d.height, d.area, d.class_name) for d in signs] == [
        (50, 30, 20, 20, 399, iv2018.descendant_leaves("traffic-sign-front")[14].name),
        (10, 5, 12, 10, 100, "sign-speed-limit-30"),
        (10, 5, 10, 2, 20, "sign-speed-limit-50"),
    ]
    assert [d.score for d in signs] == pytest.approx([1.0, 100 / 120, 20 / 120])
    assert len(outputs.find_signs(iv2018, leaf, lut, min_area=21)) == 2  # the area minimum applies per part


def test_find_signs_stacked_signs_each_get_their_box(iv2018):
    """Two signs on one post, 2 px apart at input resolution, touch in a stride-8 decision map: as
    one region the box (24 x 52) matches neither sign (box IoU < 0.5); split by class, both."""
    h = iv2018
    leaf = np.full((80, 60), _leaf(h, "building"), np.uint8)
    front = h.descendant_leaves("traffic-sign-front")
    leaf[10:34, 20:44] = front[14].id  # stop, 24 x 24
    leaf[34:62, 20:44] = front[1].id  # speed limit 30 right below, 24 x 28
    lut = outputs.sign_leaf_lut(h)
    (one,) = outputs.find_signs(h, leaf, lut, 16, split="region")
    assert (one.x, one.y, one.width, one.height, one.class_name) == (20, 10, 24, 52, "sign-speed-limit-30")
    signs = outputs.find_signs(h, leaf, lut, 16)
    assert [(d.x, d.y, d.width, d.height, d.class_name) for d in signs] == [
        (20, 34, 24, 28, "sign-speed-limit-30"),
        (20, 10, 24, 24, front[14].name),
    ]
    with pytest.raises(ValueError, match="unknown split 'blob'"):
        outputs.find_signs(h, leaf, lut, 16, split="blob")


def test_find_signs_region_split_boxes_classes_scores(iv2018):
    leaf, s30, stop = _sign_scene(iv2018)
    lut = outputs.sign_leaf_lut(iv2018, "traffic-sign-front")
    assert not lut[_leaf(iv2018, "traffic-sign-back")] and lut[s30]
    signs = outputs.find_signs(iv2018, leaf, lut, min_area=10, split="region")
    assert len(signs) == 2
    big, small = signs
    assert (big.x, big.y, big.width, big.height, big.area) == (50, 30, 20, 20, 399)
    assert big.leaf_id == stop and big.class_name == iv2018.descendant_leaves("traffic-sign-front")[14].name
    assert big.score == pytest.approx(1.0)
    assert big.center == (60.0, 40.0)
    assert (small.x, small.y, small.width, small.height, small.area) == (10, 5, 12, 10, 120)
    assert small.leaf_id == s30 and small.class_name == "sign-speed-limit-30"
    assert small.score == pytest.approx(100 / 120)
    # the tiny region appears once the minimum area allows it
    assert len(outputs.find_signs(iv2018, leaf, lut, min_area=4, split="region")) == 3
    assert outputs.find_signs(iv2018, np.full((H, W), 27, np.uint8), lut, 1) == []


def test_sign_class_can_be_a_leaf_and_unknown_is_an_error(iv2018):
    leaf, _, _ = _sign_scene(iv2018)
    back = outputs.sign_leaf_lut(iv2018, "traffic-sign-back")
    signs = outputs.find_signs(iv2018, leaf, back, 1)
    assert [(s.x, s.y, s.area, s.class_name) for s in signs] == [(60, 40, 1, "traffic-sign-back")]
    with pytest.raises(KeyError, match="no class"):
        outputs.sign_leaf_lut(iv2018, "no-such-class")


def test_overlay_blends_and_draws_boxes(iv2018):
    leaf, _, _ = _sign_scene(iv2018)
    rgb = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    colored = outputs.colorize(iv2018, leaf)
    plain = outputs.overlay(rgb, colored, 0.5)
    assert plain.shape == (H, W, 3) and plain.dtype == np.uint8
    expected = (rgb.astype(np.float64) * 0.5 + colored.astype(np.float64) * 0.5).round()
    assert np.abs(plain.astype(np.float64) - expected).max() <= 1
    np.testing.assert_array_equal(outputs.overlay(rgb, colored, 0.0), rgb)
    np.testing.assert_array_equal(outputs.overlay(rgb, colored, 1.0), colored)
    signs = outputs.find_signs(iv2018, leaf, outputs.sign_leaf_lut(iv2018, "traffic-sign-front"), 10)
    boxed = outputs.overlay(rgb, colored, 0.5, signs, iv2018.palette)
    big = signs[0]
    color = iv2018.palette[big.leaf_id]
    # the box outline has the sign's colour; pixels far from boxes and labels are the plain blend
    assert (boxed[big.y + big.height - 1, big.x : big.x + big.width] == color).all()
    np.testing.assert_array_equal(boxed[55:, 75:], plain[55:, 75:])
    assert (boxed != plain).any()
    with pytest.raises(ValueError, match="differ in shape"):
        outputs.overlay(rgb, colored[:10], 0.5)


def test_fit_input_keeps_aspect_and_pads():
    rgb = np.random.default_rng(4).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    same, fit = outputs.fit_input(rgb, None)
    assert same is rgb and fit.identity
    net_in, fit = outputs.fit_input(rgb, (64, 64))
    assert net_in.shape == (64, 64, 3)
    assert fit == FitTransform((60, 100), (38, 64), (64, 64))
    assert (net_in[38:] == 0).all()
    per = {"root": np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)}
    leaf = np.full((64, 64), 7, np.uint8)
    leaf[38:] = 9  # padding: must disappear
    restored, restored_leaf = outputs.restore_decisions(per, leaf, fit)
    assert restored["root"].shape == (60, 100) and restored_leaf.shape == (60, 100)
    assert (restored_leaf == 7).all()


def test_fit_input_upscales_small_images():
    rgb = np.full((10, 20, 3), 200, np.uint8)
    net_in, fit = outputs.fit_input(rgb, (64, 96))
    assert fit.scaled_size == (48, 96) and net_in.shape == (64, 96, 3)
    assert (net_in[:48] == 200).all() and (net_in[48:] == 0).all()


def _render_inputs(h):
    leaf, _, _ = _sign_scene(h)
    rng = np.random.default_rng(8)
    per = {name: rng.integers(0, n, (H, W), dtype=np.uint8) for name, n in h.classifier_sizes}
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return per, leaf, rgb, outputs.sign_leaf_lut(h, "traffic-sign-front")


def test_render_equals_the_chain_of_output_functions(iv2018):
    """All outputs at once: what the node and the offline bag evaluation used to compute step by step."""
    per, leaf, rgb, lut = _render_inputs(iv2018)
    got = outputs.render(iv2018, per, leaf, rgb, outputs.OUTPUTS, sign_lut=lut, min_sign_area=10, overlay_alpha=0.3)
    masks = outputs.classifier_masks(iv2018, per, leaf)
    assert list(got.masks) == list(masks)
    for name, mask in masks.items():
        np.testing.assert_array_equal(got.masks[name], mask)
    np.testing.assert_array_equal(got.leaf, leaf)
    colored = outputs.colorize(iv2018, leaf)
    np.testing.assert_array_equal(got.colored, colored)
    signs = outputs.find_signs(iv2018, leaf, lut, 10)
    assert got.signs == signs and len(signs) == 3
    np.testing.assert_array_equal(got.overlay, outputs.overlay(rgb, colored, 0.3, signs, iv2018.palette))


@pytest.mark.parametrize(
    ("wanted", "computed", "calls"),
    [
        ((), set(), {}),
        (("masks",), {"masks"}, {"classifier_masks": 1}),
        (("mask",), {"leaf"}, {}),
        (("colored",), {"colored"}, {"colorize": 1}),
        (("traffic_signs",), {"signs"}, {"find_signs": 1}),
        (("overlay",), {"overlay", "signs"}, {"colorize": 1, "find_signs": 1, "overlay": 1}),
        (("colored", "overlay"), {"colored", "overlay", "signs"}, {"colorize": 1, "find_signs": 1, "overlay": 1}),
    ],
)
def test_render_computes_only_what_is_wanted(iv2018, monkeypatch, wanted, computed, calls):
    per, leaf, rgb, lut = _render_inputs(iv2018)
    counts: dict[str, int] = {}
    for name in ("classifier_masks", "colorize", "find_signs", "overlay"):
        real = getattr(outputs, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(outputs, name, counted)
    got = outputs.render(iv2018, per, leaf, rgb, wanted, sign_lut=lut)
    present = {f for f in ("masks", "leaf", "colored", "overlay", "signs") if getattr(got, f) is not None}
    assert present == computed and counts == calls


def test_render_emits_each_output_when_ready_cheapest_first(iv2018, monkeypatch):
    """The node publishes from ``emit``: the masks must leave before the overlay is drawn."""
    per, leaf, rgb, lut = _render_inputs(iv2018)
    events: list[str] = []
    real_overlay = outputs.overlay

    def traced_overlay(*args, **kwargs):
        events.append("draw overlay")
        return real_overlay(*args, **kwargs)

    monkeypatch.setattr(outputs, "overlay", traced_overlay)
    emitted: dict[str, object] = {}

    def emit(field, value):
        events.append(field)
        emitted[field] = value

    got = outputs.render(iv2018, per, leaf, rgb, outputs.OUTPUTS, sign_lut=lut, emit=emit)
    assert events == ["masks", "leaf", "signs", "colored", "draw overlay", "overlay"]
    for field, value in emitted.items():
        assert value is getattr(got, field), field
    events.clear()
    outputs.render(iv2018, per, leaf, rgb, ("overlay",), sign_lut=lut, emit=emit)
    assert events == ["signs", "draw overlay", "overlay"]  # colored is drawn for the overlay, not emitted


def test_render_without_sign_detection_and_unknown_outputs(iv2018):
    per, leaf, rgb, _ = _render_inputs(iv2018)
    got = outputs.render(iv2018, per, leaf, rgb, ("overlay", "traffic_signs"), sign_lut=None)
    assert got.signs == []
    np.testing.assert_array_equal(got.overlay, outputs.overlay(rgb, outputs.colorize(iv2018, leaf), 0.5))
    with pytest.raises(ValueError, match=r"unknown output\(s\) \['labels'\]"):
        outputs.render(iv2018, per, leaf, rgb, ("labels",))


def test_restore_plane_to_input_or_to_network_scale():
    """A 40x80 image fitted into 64x64 (content 32x64, padding below): decisions back at input size
    (nearest), or at network scale with only the padding cropped (output.resolution network)."""
    rgb = np.zeros((40, 80, 3), np.uint8)
    net_in, fit = outputs.fit_input(rgb, (64, 64))
    assert fit.scaled_size == (32, 64) and net_in.shape == (64, 64, 3)
    plane = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    at_network = outputs.restore_plane(plane, fit, to_input=False)
    np.testing.assert_array_equal(at_network, plane[:32])
    at_input = outputs.restore_plane(plane, fit)
    assert at_input.shape == (40, 80) and set(np.unique(at_input)) <= set(np.unique(plane[:32]))
    per, leaf = outputs.restore_decisions({"root": plane.astype(np.uint8)}, plane.astype(np.uint8), fit, False)
    assert per["root"].shape == leaf.shape == (32, 64)
    same = outputs.fit_input(rgb, None)[1]
    assert outputs.restore_plane(plane, same) is plane  # resize policy none: nothing to undo


def test_confidence_mono8_rounds_and_saturates():
    p = np.array([[0.0, 0.001, 0.002, 0.5, 0.998, 1.0]], np.float32)
    np.testing.assert_array_equal(outputs.confidence_mono8(p), [[0, 0, 1, 128, 254, 255]])
    assert outputs.confidence_mono8(p).dtype == np.uint8


def test_render_remaps_the_leaf_map_when_given_a_table(iv2018):
    from hiseg_ros.label_remap import load_label_remap

    remap = load_label_remap(REPO / "config" / "label_remaps" / "driving16.yaml", iv2018)
    per, leaf = _decisions(iv2018, np.random.default_rng(4))
    rgb = np.zeros((H, W, 3), np.uint8)
    got = outputs.render(iv2018, per, leaf, rgb, ("mask",), remap=remap)
    np.testing.assert_array_equal(got.remapped, remap.lut[leaf])  # cv2 fast path == the table
    assert got.remapped.dtype == np.uint8 and got.masks is None
    assert outputs.render(iv2018, per, leaf, rgb, ("mask",)).remapped is None


@pytest.mark.parametrize("split", ["leaf", "region"])
def test_find_signs_same_for_uint8_and_uint16_maps(iv2018, split):
    """uint8 maps take cv2.LUT and a search box around the sign pixels, uint16 ones numpy indexing:
    the detections, in full-frame coordinates, must not depend on which."""
    leaf, _, _ = _sign_scene(iv2018)
    lut = outputs.sign_leaf_lut(iv2018, "traffic-sign-front")
    shifted = np.full((H + 40, W + 30), leaf[0, 0], np.uint8)
    shifted[40:, 30:] = leaf  # every sign away from the origin: the search box does not start at 0
    for scene in (leaf, shifted):
        wide = outputs.find_signs(iv2018, scene.astype(np.uint16), _pad(lut), 4, split)
        assert outputs.find_signs(iv2018, scene, lut, 4, split) == wide
    moved = outputs.find_signs(iv2018, shifted, lut, 4, split)
    assert [(d.x - 30, d.y - 40) for d in moved] == [
        (d.x, d.y) for d in outputs.find_signs(iv2018, leaf, lut, 4, split)
    ]


def _pad(lut):
    out = np.zeros(65536, bool)
    out[: lut.size] = lut
    return out
