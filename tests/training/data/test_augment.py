"""Augmentation keeps image, label maps and boxes aligned, is a pure function of its RNG, and a flip swaps
mirror-image classes (GTSDB: not flipped unless asked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import make_gtsdb

from hiseg_ros.hierarchy import load_hierarchy
from training import REPO
from training.data.augment import AugmentConfig, Geometry, center_geometry, photometric, random_geometry
from training.data.readers.base import Box, Sample
from training.data.readers.gtsdb import GTSDBDataset
from training.data.readers.label_tables import GTSDB_MIRROR_PAIRS
from training.data.synthetic.signs import sign_front
from training.fit.batches import make_sample
from training.labels.targets import PseudoLabelConfig, TargetBuilder


def _scene(h: int = 60, w: int = 90) -> tuple[np.ndarray, np.ndarray, Box]:
    image = np.zeros((h, w, 3), np.uint8)
    labels = np.zeros((h, w), np.uint8)
    box = Box(20, 10, 49, 29, 7)
    image[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1] = 200
    labels[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1] = 7
    return image, labels, box


@pytest.mark.parametrize("seed", range(12))
def test_boxes_maps_and_image_stay_aligned(seed: int):
    image, labels, box = _scene()
    cfg = AugmentConfig(crop=(40, 64), scale=(0.6, 1.8))
    geo = random_geometry(image.shape[:2], cfg, np.random.default_rng(seed))
    warped = geo.warp_map(labels, fill=255)
    assert warped.shape == (40, 64)
    boxes = geo.warp_boxes((box,))
    ys, xs = np.nonzero(warped == 7)
    if not len(xs):
        assert boxes == ()
        return
    (b,) = boxes
    # The warped box is the extent of the warped label pixels (nearest-neighbour ties: 1 px).
    assert abs(b.x0 - xs.min()) <= 1 and abs(b.x1 - xs.max()) <= 1
    assert abs(b.y0 - ys.min()) <= 1 and abs(b.y1 - ys.max()) <= 1
    assert b.label == 7
    img = geo.warp_image(image)
    assert img.shape == (40, 64, 3)
    inner = warped == 7
    assert img[inner].mean() > 150  # the bright square moved with its labels


def test_padding_uses_the_fill_value_and_flip_mirrors():
    image, labels, _ = _scene()
    geo = center_geometry(image.shape[:2], (30, 45))
    assert (geo.warp_map(labels, fill=255) != 255).all()  # pure resize: no padding
    cfg = AugmentConfig(crop=(200, 300), scale=(1.0, 1.0), flip=False)
    big = random_geometry(image.shape[:2], cfg, np.random.default_rng(0))
    warped = big.warp_map(labels, fill=255)
    assert (warped == 255).any() and (warped == 7).any()
    flip_cfg = AugmentConfig(crop=(60, 90), scale=(1.0, 1.0), flip=True)
    rng = np.random.default_rng(0)
    flipped = None
    for _ in range(20):
        geo = random_geometry(image.shape[:2], flip_cfg, rng)
        if geo.matrix[0, 0] < 0:
            flipped = geo.warp_map(labels, fill=255)
            break
    assert flipped is not None
    np.testing.assert_array_equal(flipped, labels[:, ::-1])


def test_same_rng_state_same_augmentation():
    image, _, _ = _scene()
    cfg = AugmentConfig(crop=(32, 48))
    a = random_geometry(image.shape[:2], cfg, np.random.default_rng(5))
    b = random_geometry(image.shape[:2], cfg, np.random.default_rng(5))
    np.testing.assert_array_equal(a.matrix, b.matrix)
    pa = photometric(image, cfg, np.random.default_rng(1))
    pb = photometric(image, cfg, np.random.default_rng(1))
    np.testing.assert_array_equal(pa, pb)
    assert pa.dtype == np.uint8


def test_invalid_config_names_the_key():
    with pytest.raises(ValueError, match="augment.crop"):
        AugmentConfig(crop=(0, 10))
    with pytest.raises(ValueError, match="augment.scale"):
        AugmentConfig(scale=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"augment\.brightness: expected a fraction in \[0, 1\), got 1.0"):
        AugmentConfig(brightness=1.0)
    with pytest.raises(ValueError, match=r"augment\.contrast: .* got -0.1"):
        AugmentConfig(contrast=-0.1)


# --------------------------------------------------------------------------- flips and mirror-image classes
def _gtsdb(root: Path) -> None:
    """One 12 x 16 GTSDB image: a "keep right" (38) and a "stop" (14) box."""
    make_gtsdb(root, [0], ["00000.ppm;2;3;6;8;38", "00000.ppm;9;1;12;4;14"])


def _geometry(cfg: AugmentConfig, flip: bool, flipped: bool, image_hw: tuple[int, int] = (12, 16)) -> Geometry:
    """The first geometry (seeds 0, 1, ...) that is ``flipped`` or not."""
    for seed in range(50):
        geo = random_geometry(image_hw, cfg, np.random.default_rng(seed), flip=flip)
        if geo.flipped == flipped:
            return geo
    raise AssertionError(f"no geometry with flipped={flipped} in 50 draws")


def test_a_flipped_gtsdb_sample_swaps_its_mirror_classes(tmp_path: Path):
    _gtsdb(tmp_path)
    reader = GTSDBDataset(tmp_path, flip=True)
    cfg = AugmentConfig(crop=(12, 16), scale=(1.0, 1.0), flip=True)
    sample = reader[0]
    geo = _geometry(cfg, reader.flip, flipped=True)
    mirrored = geo.mirror_labels(sample, reader.mirror_classes)
    # keep right (38) seen in a mirror is keep left (39); a stop sign stays a stop sign; boxes mirror
    assert geo.warp_boxes(mirrored.boxes) == (Box(15 - 6, 3, 15 - 2, 8, 39), Box(15 - 12, 1, 15 - 9, 4, 14))
    np.testing.assert_array_equal(geo.warp_image(mirrored.image), sample.image[:, ::-1])
    assert sample.boxes[0].label == 38  # the reader's sample is not changed
    unflipped = _geometry(cfg, reader.flip, flipped=False)
    assert unflipped.mirror_labels(sample, reader.mirror_classes) is sample


def test_gtsdb_is_not_flipped_unless_asked(tmp_path: Path):
    """Digits and "STOP" would be mirrored and have no partner class: GTSDB crops keep their side by default."""
    _gtsdb(tmp_path)
    reader = GTSDBDataset(tmp_path)
    assert reader.flip is False
    cfg = AugmentConfig(crop=(12, 16), scale=(1.0, 1.0), flip=True)
    sample = reader[0]
    for seed in range(20):
        geo = random_geometry((12, 16), cfg, np.random.default_rng(seed), flip=reader.flip)
        assert not geo.flipped
        assert geo.warp_boxes(geo.mirror_labels(sample, reader.mirror_classes).boxes) == sample.boxes
    with pytest.raises(TypeError, match="flip"):
        GTSDBDataset(tmp_path, flip="yes")  # type: ignore[arg-type]


def test_datasets_flip_by_default_and_the_augment_switch_turns_all_flips_off():
    image, _, _ = _scene()
    on, off = AugmentConfig(crop=(60, 90), scale=(1.0, 1.0)), AugmentConfig(crop=(60, 90), scale=(1.0, 1.0), flip=False)
    draws = [random_geometry(image.shape[:2], on, np.random.default_rng(s)).flipped for s in range(20)]
    assert any(draws) and not all(draws)
    assert not any(
        random_geometry(image.shape[:2], off, np.random.default_rng(s), flip=True).flipped for s in range(20)
    )


def test_mirror_classes_swap_in_native_label_maps_too():
    label = np.array([[38, 39, 14], [19, 20, 255]], np.uint8)
    sample = Sample("gtsdb", "s", np.zeros((2, 3, 3), np.uint8), label)
    geo = _geometry(AugmentConfig(crop=(2, 3), scale=(1.0, 1.0)), True, flipped=True, image_hw=(2, 3))
    swapped = geo.mirror_labels(sample, GTSDBDataset.mirror_classes).label
    np.testing.assert_array_equal(swapped, [[39, 38, 14], [20, 19, 255]])  # warp_map then mirrors the pixels
    assert swapped.dtype == np.uint8


def test_declared_mirror_pairs_are_mirror_images_in_the_renderer():
    swap = GTSDBDataset.mirror_classes
    assert sorted(swap) == sorted(c for pair in GTSDB_MIRROR_PAIRS for c in pair)
    assert all(swap[swap[c]] == c != swap[c] for c in swap)

    def face(cls: int) -> np.ndarray:
        return sign_front(cls, 96, np.random.default_rng(0)).rgb.astype(np.float32)

    for a, b in GTSDB_MIRROR_PAIRS:
        # The renderer draws about column 48 of its 96-pixel template: its mirror is a flip and a 1-pixel shift.
        mirrored = np.abs(np.roll(face(a)[:, ::-1], 1, axis=1) - face(b))[:, 1:].mean()
        assert mirrored < 0.5 < np.abs(face(a) - face(b)).mean(), (a, b, mirrored)


def test_training_crops_of_a_flipped_gtsdb_image_learn_the_mirror_class(tmp_path: Path):
    """Through the training pipeline (make_sample): the reader's flip decides, a mirrored 38 is taught as 39."""
    _gtsdb(tmp_path)
    hierarchy = load_hierarchy(REPO / "config" / "hierarchies" / "iv2018.yaml")
    builder = TargetBuilder(hierarchy, PseudoLabelConfig(box_mode="fill"))
    front = hierarchy.classifier("traffic_sign_front")
    keep_right, keep_left = (front.classes.index(hierarchy.dataset("gtsdb").ids[k]) for k in (38, 39))
    cfg = AugmentConfig(crop=(12, 16), scale=(1.0, 1.0), flip=True, brightness=0.0, contrast=0.0)
    for flip in (True, False):
        reader = GTSDBDataset(tmp_path, flip=flip)
        seen = set()
        for seed in range(12):
            _, targets = make_sample(reader, 0, "boxes", cfg, builder, np.random.default_rng(seed))
            signs = targets.hard["traffic_sign_front"]
            if signs[3, 2] == keep_right:  # the box as written (x 2..6)
                seen.add("as written")
            else:
                assert signs[3, 15 - 2] == keep_left, f"seed {seed}: a mirrored keep right must be taught keep left"
                seen.add("mirrored")
        assert seen == ({"as written", "mirrored"} if flip else {"as written"})
