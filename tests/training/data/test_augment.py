"""Augmentation keeps image, label maps and boxes aligned, and is a pure function of its RNG."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.augment import AugmentConfig, center_geometry, photometric, random_geometry
from training.data.readers.base import Box


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
