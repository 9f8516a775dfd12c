"""Crop sampling (training.data.crops): box-centred crops hold their box at the configured size, mosaic
tiles keep image, boxes and mirror classes consistent, rare-class crops are centred on the class, all a
pure function of the generator; config mistakes name the file and the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
import yaml

from hiseg_ros.hierarchy import load_hierarchy
from training import REPO
from training.config_schema import ConfigError
from training.data.augment import AugmentConfig, random_geometry
from training.data.crops import BoxCropConfig, CropConfig, CropSampler, RareClassConfig, centre_ids
from training.data.readers.base import Box, DatasetReader, Sample
from training.data.readers.cityscapes import CityscapesDataset
from training.data.readers.gtsdb import GTSDBDataset
from training.data.synthetic.generate import generate
from training.fit.config import load_config

IV2018 = REPO / "config" / "hierarchies" / "iv2018.yaml"
RIGHT, LEFT = 38, 39  # a mirror pair of GTSDB


class ArrowSigns(DatasetReader):
    """In-memory box dataset: image i holds one sign, bright on its left half for "keep right" (38),
    on its right half for "keep left" (39), so a crop's pixels say which label its box must carry."""

    name = "arrows"
    mirror_classes = MappingProxyType({RIGHT: LEFT, LEFT: RIGHT})

    def __init__(self, n: int = 6, flip: bool = True) -> None:
        super().__init__(".")
        self.flip = flip
        self._set_ids([f"{i:02d}" for i in range(n)], Path("."), "images")

    @property
    def class_names(self) -> tuple[str, ...]:
        return ()

    def _load(self, i: int) -> Sample:
        rng = np.random.default_rng(i)
        h, w = 90, 140
        side = int(rng.integers(8, 30))
        x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        label = RIGHT if i % 2 else LEFT
        image = np.full((h, w, 3), 60, np.uint8)
        half = side // 2
        bright = slice(x0, x0 + half) if label == RIGHT else slice(x0 + side - half, x0 + side)
        image[y0 : y0 + side, x0 : x0 + side] = 120
        image[y0 : y0 + side, bright] = 250
        return Sample(self.name, self._ids[i], image, None, (Box(x0, y0, x0 + side - 1, y0 + side - 1, label),))


def _augment(crop: tuple[int, int] = (128, 256), **kw) -> AugmentConfig:
    return AugmentConfig(crop=crop, brightness=0.0, contrast=0.0, **kw)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    generate(root, "small", seed=0, only=["gtsdb", "cityscapes"])
    return root


# --------------------------------------------------------------------------- box-centred crops
@pytest.mark.parametrize("size_px", [(24, 56), (10, 12)])
def test_box_centred_crops_hold_their_sign_at_the_configured_size(small: Path, size_px: tuple[int, int]):
    reader = GTSDBDataset(small / "gtsdb", split="train")
    sampler = CropSampler(CropConfig(box_crop=BoxCropConfig(size_px=size_px)), _augment())
    sides = []
    for seed in range(40):
        crop = sampler.draw(reader, seed % len(reader), np.random.default_rng(seed))
        (tile,) = crop.tiles
        if not tile.sample.boxes:
            continue  # every try drew an image without signs: a plain crop
        boxes = crop.boxes()
        h, w = crop.size
        # The centred box is the one whose scaled longer side is in range and lies wholly inside the crop.
        inside = [b for b in boxes if size_px[0] <= max(b.x1 - b.x0, b.y1 - b.y0) + 1 <= size_px[1]]
        assert inside, f"seed {seed}: no box of {size_px} px in {boxes}"
        assert any(b.x0 > 0 and b.y0 > 0 and b.x1 < w - 1 and b.y1 < h - 1 for b in inside)
        sides.extend(max(b.x1 - b.x0, b.y1 - b.y0) + 1 for b in inside)
    assert len(sides) >= 30
    assert max(sides) - min(sides) >= (size_px[1] - size_px[0]) // 2  # drawn over the range, not one size


def test_the_box_centre_is_jittered_unless_jitter_is_zero():
    reader = ArrowSigns()
    centres = {}
    for jitter in (0.0, 1.0):
        sampler = CropSampler(CropConfig(box_crop=BoxCropConfig(size_px=(20, 20), jitter=jitter)), _augment())
        got = set()
        for seed in range(20):
            (b,) = sampler.draw(reader, seed % len(reader), np.random.default_rng(seed)).boxes()
            got.add(((b.x0 + b.x1) // 2, (b.y0 + b.y1) // 2))
        centres[jitter] = got
    assert all(abs(x - 127) <= 1 and abs(y - 63) <= 1 for x, y in centres[0.0])
    assert len(centres[1.0]) > 10


# --------------------------------------------------------------------------- mosaics
def test_a_2x4_mosaic_holds_8_signs_whose_labels_match_their_pixels():
    reader = ArrowSigns()
    sampler = CropSampler(CropConfig(tiles=(2, 4), box_crop=BoxCropConfig(size_px=(16, 40))), _augment())
    flips = set()
    for seed in range(6):
        crop = sampler.draw(reader, seed, np.random.default_rng(seed))
        image, boxes = crop.image(), crop.boxes()
        assert image.shape == (128, 256, 3) and len(crop.tiles) == 8
        assert len(boxes) == 8  # one sign per tile, from 8 images (the slot's first)
        assert crop.tiles[0].sample.sample_id == reader.sample_ids[seed]
        for tile in crop.tiles:
            flips.add(tile.geometry.flipped)
        for b in boxes:
            assert 16 <= max(b.x1 - b.x0, b.y1 - b.y0) + 1 <= 40
            ty, tx = b.y0 // 64, b.x0 // 64
            assert (b.y1 // 64, b.x1 // 64) == (ty, tx), "a box stays in its tile"
            patch = image[b.y0 + 1 : b.y1, b.x0 + 1 : b.x1].astype(float)
            left, right = patch[:, : patch.shape[1] // 2].mean(), patch[:, -(patch.shape[1] // 2) :].mean()
            # Flipped tiles show the mirrored sign and carry its mirror class: pixels and labels agree.
            assert (left > right + 40) if b.label == RIGHT else (right > left + 40), (seed, b)
    assert flips == {True, False}  # each tile draws its own flip


def test_mosaic_tiles_of_a_reader_that_may_not_flip_never_flip(small: Path):
    reader = GTSDBDataset(small / "gtsdb", split="train")  # flip off by default
    sampler = CropSampler(CropConfig(tiles=(2, 4), box_crop=BoxCropConfig()), _augment((256, 512)))
    crop = sampler.draw(reader, 0, np.random.default_rng(0))
    assert not any(t.geometry.flipped for t in crop.tiles)
    assert len({t.origin for t in crop.tiles}) == 8
    assert sum(1 for t in crop.tiles if t.sample.boxes) == 8  # images without signs were redrawn
    assert len(crop.boxes()) >= 8


def test_mosaic_label_maps_are_pasted_per_tile():
    reader = ArrowSigns()
    sampler = CropSampler(CropConfig(tiles=(2, 2), box_crop=BoxCropConfig(size_px=(20, 30))), _augment((64, 96)))
    crop = sampler.draw(reader, 1, np.random.default_rng(3))
    maps = []
    for t in crop.tiles:
        m = np.zeros(t.sample.image.shape[:2], np.uint8)
        (b,) = t.sample.boxes
        m[b.y0 : b.y1 + 1, b.x0 : b.x1 + 1] = 7
        maps.append({"root": m})
    pasted = crop.warp_maps(maps, 255)["root"]
    assert pasted.shape == (64, 96)
    for b in crop.boxes():
        assert (pasted[b.y0 : b.y1 + 1, b.x0 : b.x1 + 1] == 7).mean() > 0.9
    assert (pasted == 7).sum() == pytest.approx(sum((b.x1 - b.x0 + 1) * (b.y1 - b.y0 + 1) for b in crop.boxes()), 0.1)


# --------------------------------------------------------------------------- rare-class crops
def test_centre_ids_follow_the_hierarchy():
    h = load_hierarchy(IV2018)
    assert centre_ids(h, "cityscapes", ["traffic-sign"]) == {20}  # mapped to traffic-sign-front, below it
    assert centre_ids(h, "cityscapes", ["traffic-sign", "pole", "rider"]) == {17, 18, 20, 25}
    assert 50 in centre_ids(h, "vistas", ["traffic-sign"]) and 49 in centre_ids(h, "vistas", ["traffic-sign"])
    assert centre_ids(h, "cityscapes", ["no-such-class"]) == frozenset()


def test_rare_class_crops_are_centred_on_the_class(small: Path):
    reader = CityscapesDataset(small / "cityscapes", split="train")
    ids = centre_ids(load_hierarchy(IV2018), "cityscapes", ["traffic-sign", "traffic-light", "pole"])
    cfg = CropConfig(rare_class=RareClassConfig(share=1.0, classes=("traffic-sign", "traffic-light", "pole")))
    sampler = CropSampler(cfg, _augment((64, 96), base_height=128), ids)
    centred = set()
    for seed in range(30):
        (tile,) = sampler.draw(reader, seed % len(reader), np.random.default_rng(seed)).tiles
        label = tile.geometry.warp_map(tile.sample.label, 255)
        x = 96 - 1 - 48 if tile.geometry.flipped else 48
        assert int(label[32, x]) in ids, f"seed {seed}: centre pixel is {label[32, x]}"
        centred.add(int(label[32, x]))
    assert len(centred) >= 2  # a class is picked among those present, not always the same
    assert len(sampler._pixels) == len(reader)  # computed once per image
    assert all(len(p) <= 256 for pixels in sampler._pixels.values() for p in pixels.values())


def test_rare_share_and_plain_crops_keep_the_plain_draws(small: Path):
    reader = CityscapesDataset(small / "cityscapes", split="train")
    aug = _augment((64, 96), base_height=128)
    ids = centre_ids(load_hierarchy(IV2018), "cityscapes", ["traffic-sign"])
    plain = CropSampler(CropConfig(), aug)
    for seed in range(5):
        (tile,) = plain.draw(reader, 0, np.random.default_rng(seed)).tiles
        expected = random_geometry(reader[0].image.shape[:2], aug, np.random.default_rng(seed), flip=True)
        np.testing.assert_array_equal(tile.geometry.matrix, expected.matrix)  # no crops entry: same data as before
    never = CropSampler(CropConfig(rare_class=RareClassConfig(share=0.0)), aug, ids)
    always = CropSampler(CropConfig(rare_class=RareClassConfig(share=1.0)), aug, ids)
    has_sign = [bool((s.label == 20).any()) for s in reader]
    hits = {"never": 0, "always": 0}
    for seed in range(20):
        for name, sampler in (("never", never), ("always", always)):
            (t,) = sampler.draw(reader, seed % len(reader), np.random.default_rng(seed)).tiles
            hits[name] += int((t.geometry.warp_map(t.sample.label, 255) == 20).any())
    # Images without the class get a plain crop; every other crop holds it.
    assert hits["always"] == sum(has_sign[seed % len(reader)] for seed in range(20)) > hits["never"]


def test_crops_are_a_pure_function_of_the_generator():
    reader = ArrowSigns()
    sampler = CropSampler(CropConfig(tiles=(2, 4), box_crop=BoxCropConfig(share=0.7)), _augment())
    a = sampler.draw(reader, 2, np.random.default_rng(11))
    b = sampler.draw(reader, 2, np.random.default_rng(11))
    c = sampler.draw(reader, 2, np.random.default_rng(12))
    np.testing.assert_array_equal(a.image(), b.image())
    assert a.boxes() == b.boxes() and a.boxes() != c.boxes()


# --------------------------------------------------------------------------- config
def _write(tmp_path: Path, crops_by_name: dict, crop: list[int] | None = None) -> Path:
    datasets = [
        {"name": n, "root": n, **({"crops": crops_by_name[n]} if n in crops_by_name else {})}
        for n in ("cityscapes", "gtsdb", "openscapes")
    ]
    raw = {"hierarchy": str(IV2018), "datasets": datasets}
    if crop:
        raw["augment"] = {"crop": crop}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("crops", "message"),
    [
        ({"gtsdb": {"tile": [2, 4]}}, r"datasets\[1\]\.crops\.tile: unknown key \(expected one of tiles, box_crop"),
        ({"gtsdb": {"tiles": [2]}}, r"datasets\[1\]\.crops\.tiles: expected a list of 2 .*got \[2\]"),
        ({"gtsdb": {"tiles": [0, 4]}}, r"datasets\[1\]\.crops: tiles: expected \[rows, cols\] >= 1"),
        ({"gtsdb": {"box_crop": {"size_px": [40, 20]}}}, r"datasets\[1\]\.crops\.box_crop: size_px: expected \[min"),
        ({"gtsdb": {"box_crop": {"sizes": [4, 8]}}}, r"datasets\[1\]\.crops\.box_crop\.sizes: unknown key"),
        ({"cityscapes": {"box_crop": {}}}, r"datasets\[0\]\.crops\.box_crop: dataset 'cityscapes' has no boxes"),
        ({"gtsdb": {"rare_class": {}}}, r"datasets\[1\]\.crops\.rare_class: dataset 'gtsdb' has no label maps"),
        ({"openscapes": {"tiles": [2, 2]}}, r"datasets\[2\]\.crops\.tiles: image-level tags"),
        ({"cityscapes": {"rare_class": {"share": 2}}}, r"datasets\[0\]\.crops\.rare_class: share: expected a frac"),
        ({"cityscapes": {"rare_class": {"classes": "pole"}}}, r"datasets\[0\]\.crops\.rare_class\.classes: expected a"),
        (
            {"cityscapes": {"rare_class": {"classes": ["trafic-sign"]}}},
            r"datasets\[0\]\.crops\.rare_class\.classes: \['trafic-sign'\]: none of them is a class of the hierarchy",
        ),
    ],
)
def test_config_errors_name_the_file_and_the_key(tmp_path: Path, crops: dict, message: str):
    path = _write(tmp_path, crops)
    with pytest.raises(ConfigError, match=rf"^{path}: {message}"):
        load_config(path, check_data=False)


def test_tiles_must_fit_the_crop(tmp_path: Path):
    path = _write(tmp_path, {"gtsdb": {"tiles": [2, 40]}}, crop=[16, 32])
    with pytest.raises(ConfigError, match=r"datasets\[1\]\.crops\.tiles: \[2, 40\] tiles do not fit a crop"):
        load_config(path, check_data=False)


def test_the_shipped_configs_crop_for_rare_things():
    config, _ = load_config(REPO / "config" / "training" / "default.yaml", check_data=False)
    by_name = {d.name: d for d in config.datasets}
    assert by_name["gtsdb"].crops.tiles == (2, 4) and by_name["gtsdb"].crops.box_crop is not None
    for name in ("cityscapes", "vistas"):
        rare = by_name[name].crops.rare_class
        assert rare is not None and 0.3 <= rare.share <= 0.5 and "traffic-sign" in rare.classes
    assert config.augment.crop == (256, 512)  # the same compute per iteration as before
    written = config.to_dict()["datasets"]
    assert yaml.safe_load(yaml.safe_dump(written)) == written  # the effective config a run writes
    inherited, _ = load_config(REPO / "config" / "training" / "flat_baseline.yaml", check_data=False)
    assert [d.crops for d in inherited.datasets] == [d.crops for d in config.datasets]
    demo, _ = load_config(REPO / "config" / "training" / "demo.yaml", check_data=False)
    denser = [replace(d.crops, tiles=(3, 6)) if d.name == "gtsdb" else d.crops for d in config.datasets]
    assert [d.crops for d in demo.datasets] == denser  # the main job: 18 signs per mosaic


def test_crop_config_round_trips_through_the_written_config():
    crops = CropConfig(tiles=(2, 4), box_crop=BoxCropConfig(size_px=(20, 40)), rare_class=None)
    assert crops.to_dict() == {"tiles": [2, 4], "box_crop": {"share": 1.0, "size_px": [20, 40], "jitter": 0.8}}
    assert replace(crops, tiles=(1, 1), box_crop=None).plain


# --------------------------------------------------------------------------- the training pipeline
def test_make_sample_teaches_every_tile_of_a_mosaic(small: Path):
    """Through make_sample: every sign of a GTSDB mosaic gets sign-class targets; no crops entry = as before."""
    from training.fit.batches import make_sample
    from training.labels.targets import PseudoLabelConfig, TargetBuilder

    hierarchy = load_hierarchy(IV2018)
    builder = TargetBuilder(hierarchy, PseudoLabelConfig(box_mode="fill"))
    reader = GTSDBDataset(small / "gtsdb", split="train")
    aug = _augment((128, 256))
    mosaic = CropSampler(CropConfig(tiles=(2, 4), box_crop=BoxCropConfig(size_px=(16, 30))), aug)
    image, targets = make_sample(reader, 0, "boxes", aug, builder, np.random.default_rng(0), mosaic)
    crop = mosaic.draw(reader, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(image, crop.image())  # brightness/contrast 0: the crop's own pixels
    front = targets.hard["traffic_sign_front"]
    taught = [(front[b.y0 : b.y1 + 1, b.x0 : b.x1 + 1] != 255).mean() for b in crop.boxes()]
    assert len(taught) >= 8 and min(taught) > 0.5
    a = make_sample(reader, 1, "boxes", aug, builder, np.random.default_rng(4))
    b = make_sample(reader, 1, "boxes", aug, builder, np.random.default_rng(4), CropSampler(CropConfig(), aug))
    np.testing.assert_array_equal(a[0], b[0])
