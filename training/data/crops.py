"""Where training crops are cut: box-centred crops, mosaics of box-centred tiles, rare-class-centred crops.

A plain random crop (:func:`training.data.augment.random_geometry`) of a GTSDB image often holds no
sign at all, and a sign it holds is a few output cells; a random crop of a Cityscapes / Vistas image
holds a traffic sign on a fraction of a percent of its pixels. A dataset's ``crops`` config entry
(:class:`CropConfig`) changes where its crops are cut, not how: every geometry is built by
:func:`training.data.augment.scaled_crop` and warped by :class:`~training.data.augment.Geometry`,
so images, label maps and boxes stay aligned and flips swap mirror classes as for a plain crop.

* ``box_crop`` (box datasets): centre the crop on a random box, scaled so that its longer side lands
  uniformly in ``size_px``; the box centre is jittered inside the crop (``jitter`` of the slack)
  so the sign is not always in the middle. An image without boxes is replaced by another random one.
* ``tiles: [rows, cols]``: the crop is a grid of tiles, each cut (as above) from its own image (the
  slot's image first, then random ones), with its own flip; boxes and label maps are pasted with it.
* ``rare_class`` (per-pixel datasets): a ``share`` of the crops is centred on a pixel of a class
  picked uniformly among the listed hierarchy classes (or, with no list, all classes) present in
  the image (class-uniform sampling); the pixel lists are computed once per image, kept for a
  bounded number of images, and subsampled to a bounded length.

All randomness comes from the slot's generator, so a crop is a pure function of (seed, iteration,
rank, slot) like the rest of the augmentation. Without a ``crops`` entry the first draw is the
plain crop's, so such datasets see exactly the data they saw before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hiseg_ros.hierarchy import Hierarchy
from training.config_schema import ConfigSource, convert, parse_dataclass, reject_unknown_keys
from training.data.augment import AugmentConfig, Geometry, placed_crop, random_geometry
from training.data.readers.base import Box, DatasetReader, Sample

TRIES = 4  # images drawn for a box-centred tile before it settles for a plain crop of the last one
CACHED_IMAGES = 512  # images whose class pixel lists a sampler keeps (least recently used go first)
PIXELS_PER_CLASS = 256  # pixel positions kept per class and image (evenly strided over the class)


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class BoxCropConfig:
    """Box-centred crops; messages start with the key, the parser prefixes where it sits."""

    share: float = 1.0  # fraction of crops (tiles) centred on a box; the rest are plain crops
    size_px: tuple[int, int] = (24, 56)  # the box's longer side after scaling, drawn uniformly
    jitter: float = 0.8  # box centre offset, as a fraction of the room the box leaves in the crop

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValueError(f"share: expected a fraction in [0, 1], got {self.share}")
        if not 0 < self.size_px[0] <= self.size_px[1]:
            raise ValueError(f"size_px: expected [min, max] with 0 < min <= max, got {list(self.size_px)}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter: expected a fraction in [0, 1], got {self.jitter}")


@dataclass(frozen=True)
class RareClassConfig:
    """Crops centred on a pixel of a rare class (class names of the training hierarchy)."""

    share: float = 0.4  # fraction of crops centred on a class pixel; the rest are plain crops
    classes: tuple[str, ...] = ()  # () = every class the dataset maps

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValueError(f"share: expected a fraction in [0, 1], got {self.share}")


@dataclass(frozen=True)
class CropConfig:
    """A dataset entry's ``crops``: ``{tiles: [rows, cols], box_crop: {...}, rare_class: {...}}``."""

    tiles: tuple[int, int] = (1, 1)
    box_crop: BoxCropConfig | None = None
    rare_class: RareClassConfig | None = None

    def __post_init__(self) -> None:
        if min(self.tiles) < 1:
            raise ValueError(f"tiles: expected [rows, cols] >= 1, got {list(self.tiles)}")

    @property
    def plain(self) -> bool:
        return self == CropConfig()

    def to_dict(self) -> dict[str, Any]:
        """The YAML layout (lists, not tuples), for the effective config a run writes."""
        out: dict[str, Any] = {"tiles": list(self.tiles)}
        if self.box_crop is not None:
            b = self.box_crop
            out["box_crop"] = {"share": b.share, "size_px": list(b.size_px), "jitter": b.jitter}
        if self.rare_class is not None:
            out["rare_class"] = {"share": self.rare_class.share, "classes": list(self.rare_class.classes)}
        return out


def parse_crops(raw: Any, where: str, source: ConfigSource) -> CropConfig:
    """The ``crops`` mapping at dotted key ``where`` (null or absent: plain crops); ConfigErrors name the key."""
    if raw is None:
        return CropConfig()
    if not isinstance(raw, dict):
        raise source.error(where, f"expected a mapping, got {raw!r}")
    reject_unknown_keys(where, raw, ["tiles", "box_crop", "rare_class"], source)
    values: dict[str, Any] = {}
    if "tiles" in raw:
        values["tiles"] = convert(tuple[int, int], raw["tiles"], f"{where}.tiles", source)
    if "box_crop" in raw:
        values["box_crop"] = parse_dataclass(BoxCropConfig, raw["box_crop"], f"{where}.box_crop", source)
    if "rare_class" in raw:
        rare = raw["rare_class"]
        rare = {} if rare is None else rare
        if not isinstance(rare, dict):
            raise source.error(f"{where}.rare_class", f"expected a mapping, got {rare!r}")
        classes = rare.get("classes", [])  # variable length: not a tuple[str, str] field
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise source.error(f"{where}.rare_class.classes", f"expected a list of class names, got {classes!r}")
        rest = {k: v for k, v in rare.items() if k != "classes"}
        parsed = parse_dataclass(RareClassConfig, rest, f"{where}.rare_class", source)
        values["rare_class"] = replace(parsed, classes=tuple(classes))
    try:
        return CropConfig(**values)
    except ValueError as exc:
        raise source.error(where, str(exc)) from exc


def check_crops(
    crops: CropConfig,
    where: str,
    source: ConfigSource,
    supervision: str,
    dataset: str,
    hierarchy: Hierarchy,
    crop: tuple[int, int],
) -> None:
    """Cross-checks against the dataset's supervision, the hierarchy and the training crop size.

    A listed rare class the hierarchy lacks is skipped, not an error: variants that swap the
    hierarchy inherit the dataset list (the flat baseline has no inner class ``traffic-sign``, and
    ignores those pixels anyway); the list is an error when it centres on nothing.
    """
    if crops.box_crop is not None and supervision != "boxes":
        raise source.error(f"{where}.box_crop", f"dataset {dataset!r} has no boxes (its supervision is {supervision})")
    if crops.rare_class is not None and supervision != "pixel":
        raise source.error(
            f"{where}.rare_class", f"dataset {dataset!r} has no label maps (its supervision is {supervision})"
        )
    if crops.tiles != (1, 1) and supervision == "tags":
        raise source.error(f"{where}.tiles", f"image-level tags of dataset {dataset!r} cannot be split into tiles")
    rows, cols = crops.tiles
    if crop[0] < rows or crop[1] < cols:
        raise source.error(f"{where}.tiles", f"{list(crops.tiles)} tiles do not fit a crop of {list(crop)}")
    if crops.rare_class is not None and not centre_ids(hierarchy, dataset, crops.rare_class.classes):
        names = {c.name for c in hierarchy.classes}
        known = [n for n in crops.rare_class.classes if n in names]
        why = "none of them is a class of the hierarchy" if not known else "none of them is mapped by the dataset"
        raise source.error(
            f"{where}.rare_class.classes",
            f"{list(crops.rare_class.classes)}: {why} (hierarchy {hierarchy.name!r}, dataset {dataset!r})",
        )


def centre_ids(hierarchy: Hierarchy, dataset: str, classes: Sequence[str]) -> frozenset[int]:
    """Native ids of ``dataset`` mapped to one of ``classes`` or below it (no classes: every mapped id)."""
    wanted = set(classes)
    ids = set()
    for native, name in hierarchy.dataset(dataset).ids.items():
        if name is None or not isinstance(native, int):
            continue
        if not wanted or name in wanted or wanted.intersection(hierarchy.ancestors(name)):
            ids.add(native)
    return frozenset(ids)


# --------------------------------------------------------------------------- crops and tiles
@dataclass(frozen=True)
class Tile:
    """One source sample (mirror classes already swapped), its geometry into the tile, and where the tile sits."""

    sample: Sample
    geometry: Geometry
    origin: tuple[int, int]  # (y, x) of the tile in the crop


@dataclass(frozen=True)
class Crop:
    """A training crop: one tile (the usual case) or a grid of tiles from several images."""

    size: tuple[int, int]
    tiles: tuple[Tile, ...]

    def image(self) -> np.ndarray:
        return self._paste([t.geometry.warp_image(t.sample.image) for t in self.tiles], 0)

    def warp_maps(self, maps: Sequence[Mapping[str, np.ndarray]], fill: int) -> dict[str, np.ndarray]:
        """Per tile a dict of full-image maps (e.g. hard targets), warped (nearest, ``fill``) and pasted."""
        return {
            name: self._paste([t.geometry.warp_map(m[name], fill) for t, m in zip(self.tiles, maps, strict=True)], fill)
            for name in maps[0]
        }

    def boxes(self) -> tuple[Box, ...]:
        """Every tile's boxes in crop coordinates (clipped to their tile, dropped outside it)."""
        out = []
        for t in self.tiles:
            y, x = t.origin
            out.extend(
                Box(b.x0 + x, b.y0 + y, b.x1 + x, b.y1 + y, b.label) for b in t.geometry.warp_boxes(t.sample.boxes)
            )
        return tuple(out)

    def _paste(self, parts: list[np.ndarray], fill: int) -> np.ndarray:
        if len(parts) == 1:
            return parts[0]
        canvas = np.full((*self.size, *parts[0].shape[2:]), fill, parts[0].dtype)
        for t, part in zip(self.tiles, parts, strict=True):
            y, x = t.origin
            canvas[y : y + part.shape[0], x : x + part.shape[1]] = part
        return canvas


@dataclass
class CropSampler:
    """Draws the crops of one dataset as its ``crops`` config says (one sampler per dataset entry).

    ``ids`` are the native ids a ``rare_class`` crop may centre on (:func:`centre_ids`). The class
    pixel cache is per sampler (so per loader process) and bounded by :data:`CACHED_IMAGES`.
    """

    config: CropConfig
    augment: AugmentConfig
    ids: frozenset[int] = frozenset()
    _pixels: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)

    @classmethod
    def for_dataset(cls, config: CropConfig, augment: AugmentConfig, hierarchy: Hierarchy, dataset: str) -> CropSampler:
        classes = config.rare_class.classes if config.rare_class is not None else ()
        ids = centre_ids(hierarchy, dataset, classes) if config.rare_class is not None else frozenset()
        return cls(config, augment, ids)

    def draw(self, reader: DatasetReader, index: int, rng: np.random.Generator) -> Crop:
        h, w = self.augment.crop
        rows, cols = self.config.tiles
        ys, xs = _edges(h, rows), _edges(w, cols)
        tiles = []
        for r in range(rows):
            for c in range(cols):
                size = (ys[r + 1] - ys[r], xs[c + 1] - xs[c])
                first = r == 0 and c == 0
                tiles.append(self._tile(reader, index if first else None, size, (ys[r], xs[c]), rng))
        return Crop((h, w), tuple(tiles))

    def _tile(
        self,
        reader: DatasetReader,
        index: int | None,
        size: tuple[int, int],
        origin: tuple[int, int],
        rng: np.random.Generator,
    ) -> Tile:
        cfg = self.config
        if index is None:
            index = int(rng.integers(len(reader)))
        sample = reader[index]
        geometry = None
        if cfg.box_crop is not None and rng.random() < cfg.box_crop.share:
            for _ in range(TRIES - 1):
                if sample.boxes:
                    break
                sample = reader[int(rng.integers(len(reader)))]
            if sample.boxes:
                geometry = self._box_geometry(sample, size, reader.flip, rng)
        elif cfg.rare_class is not None and rng.random() < cfg.rare_class.share:
            geometry = self._class_geometry(sample, size, reader.flip, rng)
        if geometry is None:
            geometry = random_geometry(sample.image.shape[:2], self._augment_at(size), rng, flip=reader.flip)
        return Tile(geometry.mirror_labels(sample, reader.mirror_classes), geometry, origin)

    def _augment_at(self, size: tuple[int, int]) -> AugmentConfig:
        return self.augment if size == self.augment.crop else replace(self.augment, crop=size)

    def _flip(self, dataset_flip: bool, rng: np.random.Generator) -> bool:
        return self.augment.flip and dataset_flip and bool(rng.integers(0, 2))

    def _box_geometry(self, sample: Sample, size: tuple[int, int], flip: bool, rng: np.random.Generator) -> Geometry:
        cfg = self.config.box_crop
        assert cfg is not None
        box = sample.boxes[int(rng.integers(len(sample.boxes)))]
        bw, bh = box.x1 - box.x0 + 1, box.y1 - box.y0 + 1
        th, tw = size
        # A tile smaller than size_px (a small training crop) caps the box at the tile.
        scale = min(float(rng.uniform(*cfg.size_px)), th, tw) / max(bw, bh)
        # Where the box centre lands (crop pixel coordinates): the middle, moved by up to ``jitter``
        # of the room the scaled box leaves on each side.
        room_x, room_y = max(0.0, tw - bw * scale) / 2, max(0.0, th - bh * scale) / 2
        cx = (tw - 1) / 2 + cfg.jitter * float(rng.uniform(-room_x, room_x))
        cy = (th - 1) / 2 + cfg.jitter * float(rng.uniform(-room_y, room_y))
        centre = ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
        return placed_crop(scale, centre, (cx, cy), self._flip(flip, rng), size)

    def _class_geometry(
        self, sample: Sample, size: tuple[int, int], flip: bool, rng: np.random.Generator
    ) -> Geometry | None:
        """Centred on a pixel of a class present in the image (None when none is): the pixel lands on
        the crop's middle pixel exactly, so nearest-neighbour maps keep its label there at any scale."""
        if sample.label is None:
            return None
        pixels = self._class_pixels(sample)
        if not pixels:
            return None
        positions = pixels[sorted(pixels)[int(rng.integers(len(pixels)))]]
        y, x = divmod(int(positions[int(rng.integers(len(positions)))]), sample.label.shape[1])
        base = (self.augment.base_height / sample.label.shape[0]) if self.augment.base_height else 1.0
        scale = base * float(rng.uniform(*self.augment.scale))
        th, tw = size
        return placed_crop(scale, (x, y), (tw // 2, th // 2), self._flip(flip, rng), size)

    def _class_pixels(self, sample: Sample) -> dict[int, np.ndarray]:
        """Flat positions of each centre class in the image (a strided subsample), cached per sample id."""
        key = (sample.dataset, sample.sample_id)
        if key in self._pixels:
            self._pixels.move_to_end(key)
            return self._pixels[key]
        flat = sample.label.ravel()
        present = np.unique(flat)
        pixels = {}
        for native in (int(v) for v in present if int(v) in self.ids):
            where = np.flatnonzero(flat == native)
            step = max(1, len(where) // PIXELS_PER_CLASS)
            pixels[native] = where[::step][:PIXELS_PER_CLASS].astype(np.uint32)
        self._pixels[key] = pixels
        if len(self._pixels) > CACHED_IMAGES:
            self._pixels.popitem(last=False)
        return pixels


def _edges(length: int, parts: int) -> list[int]:
    return [round(i * length / parts) for i in range(parts + 1)]
