"""Write Scenes in the on-disk layouts of the four real datasets (docs/DATASET_FORMATS.md).

Each format has a per-image function (used by the parallel generator; it writes that
image's files and returns an ImageRecord) and a finisher for the dataset-level files
(config.json, gt.txt, the CSVs). `write_<format>(root, scenes)` combines both for callers
that already hold the scenes.
"""

from __future__ import annotations

import hashlib
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.data.readers.gtsdb import split_number
from training.data.readers.label_tables import (
    CITYSCAPES_LABELS,
    OPENSCAPES_TAGS,
    VISTAS_V12_ID,
    VISTAS_V12_LABELS,
)

from .canvas import Instance
from .files import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    encode_gray_png,
    encode_jpg,
    encode_palette_png,
    encode_png,
    encode_ppm,
)
from .scene import Scene

# -- Vistas v1.2 -> Cityscapes labelIds ------------------------------------------------------
# How a Cityscapes annotator would have labelled the same pixel (Cityscapes label
# definitions): every drivable surface that is only delimited by markings, markings
# themselves and covers/holes in it are "road"; parking is its own class; curbs and
# pedestrian surfaces are "sidewalk"; sign fronts are "traffic sign" but sign backs are
# "static" (Cityscapes labels only the front as traffic sign); frames and all poles are
# "pole"; all riders are "rider"; trams are "train"; slow wheeled things and animals are
# "dynamic"; everything without a Cityscapes counterpart is "static" or "ground".
VISTAS_TO_CITYSCAPES: dict[str, int] = {
    "animal--bird": 5,
    "animal--ground-animal": 5,
    "construction--barrier--curb": 8,
    "construction--barrier--fence": 13,
    "construction--barrier--guard-rail": 14,
    "construction--barrier--other-barrier": 4,
    "construction--barrier--wall": 12,
    "construction--flat--bike-lane": 7,
    "construction--flat--crosswalk-plain": 7,
    "construction--flat--curb-cut": 8,
    "construction--flat--parking": 9,
    "construction--flat--pedestrian-area": 8,
    "construction--flat--rail-track": 10,
    "construction--flat--road": 7,
    "construction--flat--service-lane": 7,
    "construction--flat--sidewalk": 8,
    "construction--structure--bridge": 15,
    "construction--structure--building": 11,
    "construction--structure--tunnel": 16,
    "human--person": 24,
    "human--rider--bicyclist": 25,
    "human--rider--motorcyclist": 25,
    "human--rider--other-rider": 25,
    "marking--crosswalk-zebra": 7,
    "marking--general": 7,
    "nature--mountain": 22,
    "nature--sand": 22,
    "nature--sky": 23,
    "nature--snow": 22,
    "nature--terrain": 22,
    "nature--vegetation": 21,
    "nature--water": 6,
    "object--banner": 4,
    "object--bench": 4,
    "object--bike-rack": 4,
    "object--billboard": 4,
    "object--catch-basin": 7,
    "object--cctv-camera": 4,
    "object--fire-hydrant": 4,
    "object--junction-box": 4,
    "object--mailbox": 4,
    "object--manhole": 7,
    "object--phone-booth": 4,
    "object--pothole": 7,
    "object--street-light": 17,
    "object--support--pole": 17,
    "object--support--traffic-sign-frame": 17,
    "object--support--utility-pole": 17,
    "object--traffic-light": 19,
    "object--traffic-sign--back": 4,
    "object--traffic-sign--front": 20,
    "object--trash-can": 4,
    "object--vehicle--bicycle": 33,
    "object--vehicle--boat": 5,
    "object--vehicle--bus": 28,
    "object--vehicle--car": 26,
    "object--vehicle--caravan": 29,
    "object--vehicle--motorcycle": 32,
    "object--vehicle--on-rails": 31,
    "object--vehicle--other-vehicle": 5,
    "object--vehicle--trailer": 30,
    "object--vehicle--truck": 27,
    "object--vehicle--wheeled-slow": 5,
    "void--car-mount": 1,
    "void--ego-vehicle": 1,
    "void--unlabeled": 0,
}
CITYSCAPES_FROM_VISTAS = np.array([VISTAS_TO_CITYSCAPES[lab.name] for lab in VISTAS_V12_LABELS], np.uint8)
CITYSCAPES_INSTANCE_IDS = frozenset(range(24, 34))  # person .. bicycle carry labelId*1000+k
_CS_BY_ID = {lab.id: lab for lab in CITYSCAPES_LABELS if lab.id >= 0}
_CS_COLORS = np.zeros((256, 3), np.uint8)
for _lab in _CS_BY_ID.values():
    _CS_COLORS[_lab.id] = _lab.color
CITYSCAPES_CITIES = {
    "train": ("aachen", "bremen", "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld"),
}
VISTAS_PALETTE = [lab.color for lab in VISTAS_V12_LABELS]

# -- OpenScapes (Open Images) vocabulary ---------------------------------------------------
OPEN_IMAGES_MIDS: dict[str, str] = {
    "car": "/m/0k4j",
    "person": "/m/01g317",
    "bicycle": "/m/0199g",
    "bus": "/m/01bjv",
    "motorcycle": "/m/04_sv",
    "train": "/m/07jdr",
    "truck": "/m/07r04",
    "man": "/m/04yx4",
    "woman": "/m/03bt1vf",
    "boy": "/m/01bl7v",
    "girl": "/m/05r655",
    "traffic light": "/m/015qff",
    "traffic sign": "/m/01mqdt",
    "stop sign": "/m/02pv19",
}
IMAGE_LABELS_HEADER = ("ImageID", "Source", "LabelName", "Confidence")
BOXES_HEADER = (
    "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
    "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside",
)  # fmt: skip
# Vistas labels whose visible pixels make an image-level tag positive.
_TAG_LABELS: dict[str, tuple[str, ...]] = {
    "car": ("object--vehicle--car",),
    "bus": ("object--vehicle--bus",),
    "truck": ("object--vehicle--truck",),
    "train": ("object--vehicle--on-rails",),
    "motorcycle": ("object--vehicle--motorcycle",),
    "bicycle": ("object--vehicle--bicycle",),
    "person": ("human--person", "human--rider--bicyclist", "human--rider--motorcyclist", "human--rider--other-rider"),
    "traffic light": ("object--traffic-light",),
    "traffic sign": ("object--traffic-sign--front",),
}
STOP_SIGN_CLASS = 14
MIN_GENDER_PX = 12  # a person must be at least this tall (and 4 % of the image) to be tagged man/woman/...


@dataclass
class ImageRecord:
    """What the dataset-level finishers and the summary need to know about one written image."""

    dataset: str
    split: str
    name: str
    width: int
    height: int
    label_pixels: list[int]
    gt_lines: list[str] = field(default_factory=list)  # GTSDB
    sign_classes: list[int] = field(default_factory=list)  # GTSDB classes of boxed signs
    sign_sizes: list[int] = field(default_factory=list)  # GTSDB: longer side of each box, pixels
    tags: list[str] = field(default_factory=list)  # OpenScapes positives
    label_rows: list[list[str]] = field(default_factory=list)
    box_rows: list[list[str]] = field(default_factory=list)


def _record(dataset: str, split: str, name: str, scene: Scene) -> ImageRecord:
    counts = np.bincount(scene.labels.ravel(), minlength=len(VISTAS_V12_LABELS))
    return ImageRecord(dataset, split, name, scene.width, scene.height, [int(c) for c in counts])


# -- Cityscapes ------------------------------------------------------------------------------
def cityscapes_name(split: str, index: int) -> tuple[str, str]:
    """(city, stem) of the index-th image of a split: {city}_{seq:06d}_{frame:06d}."""
    cities = CITYSCAPES_CITIES.get(split, CITYSCAPES_CITIES["train"])
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{19:06d}"


def cityscapes_instance_ids(scene: Scene, label_ids: np.ndarray) -> np.ndarray:
    """uint16 instanceIds: labelId*1000+k on instance classes, plain labelId elsewhere."""
    lut = np.zeros(max((i.id for i in scene.instances), default=0) + 1, np.uint16)
    counters: dict[int, int] = {}
    for inst in scene.instances:
        cid = int(CITYSCAPES_FROM_VISTAS[inst.label])
        if cid in CITYSCAPES_INSTANCE_IDS:
            k = counters.get(cid, 0)
            counters[cid] = k + 1
            lut[inst.id] = cid * 1000 + min(k, 999)
    values = lut[scene.instance_map]
    return np.where(values > 0, values, label_ids.astype(np.uint16))


def cityscapes_polygons(scene: Scene, label_ids: np.ndarray, instance_ids: np.ndarray) -> dict:
    """polygons.json: stuff regions first, then instances in drawing (far to near) order."""
    objects = []

    def add(mask: np.ndarray, name: str, dx: int = 0, dy: int = 0) -> None:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            c = cv2.approxPolyDP(c, 0.7, True).reshape(-1, 2)
            if len(c) >= 3:
                objects.append({"label": name, "polygon": [[int(x) + dx, int(y) + dy] for x, y in c]})

    stuff = np.where(instance_ids >= 1000, 0, label_ids)
    for cid in np.unique(stuff):
        if cid not in (0,) and cid not in CITYSCAPES_INSTANCE_IDS:
            add(stuff == cid, _CS_BY_ID[int(cid)].name)
    for inst in scene.instances:
        cid = int(CITYSCAPES_FROM_VISTAS[inst.label])
        if cid in CITYSCAPES_INSTANCE_IDS:
            x0, y0, x1, y1 = inst.bbox
            window = scene.instance_map[y0 : y1 + 1, x0 : x1 + 1] == inst.id
            add(np.pad(window, 1), _CS_BY_ID[cid].name, x0 - 1, y0 - 1)
    return {"imgHeight": scene.height, "imgWidth": scene.width, "objects": objects}


def cityscapes_signs(scene: Scene) -> dict:
    """``<stem>_signs.json`` (a project extension, docs/DATASET_FORMATS.md): the visible front signs'
    inclusive boxes and GTSDB classes, left to right; Cityscapes files keep no sign class (traffic
    sign is no instance class there), and the drive bag's sign ground truth needs it."""
    fronts = [i for i in scene.instances if i.gtsdb_class is not None and i.area > 0]
    signs = [
        {"bbox": [int(v) for v in inst.bbox], "gtsdb_class": int(inst.gtsdb_class)}
        for inst in sorted(fronts, key=lambda i: (i.bbox[0], i.bbox[1], i.id))
    ]
    return {"imgHeight": scene.height, "imgWidth": scene.width, "signs": signs}


def write_cityscapes_image(root: Path, split: str, index: int, scene: Scene) -> ImageRecord:
    city, stem = cityscapes_name(split, index)
    label_ids = CITYSCAPES_FROM_VISTAS[scene.labels]
    instance_ids = cityscapes_instance_ids(scene, label_ids)
    gt = Path(root) / "gtFine" / split / city
    atomic_write_bytes(Path(root) / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", encode_png(scene.image))
    atomic_write_bytes(gt / f"{stem}_gtFine_labelIds.png", encode_png(label_ids))
    atomic_write_bytes(gt / f"{stem}_gtFine_instanceIds.png", encode_png(instance_ids))
    atomic_write_bytes(gt / f"{stem}_gtFine_color.png", encode_png(_CS_COLORS[label_ids]))
    atomic_write_json(gt / f"{stem}_gtFine_polygons.json", cityscapes_polygons(scene, label_ids, instance_ids))
    atomic_write_json(gt / f"{stem}_signs.json", cityscapes_signs(scene))
    return _record("cityscapes", split, stem, scene)


def finish_cityscapes(root: Path, records: Sequence[ImageRecord]) -> None:
    """Cityscapes has no dataset-level files."""


# -- Mapillary Vistas v1.2 -------------------------------------------------------------------
def vistas_key(scene: Scene) -> str:
    """22-character URL-safe key like Vistas image keys, derived from the scene seed."""
    digest = hashlib.sha256(f"vistas:{scene.seed}".encode()).digest()
    return urlsafe_b64encode(digest).decode()[:22]


def vistas_config() -> dict:
    return {
        "labels": [
            {"name": lab.name, "readable": lab.readable, "color": list(lab.color), "instances": lab.instances,
             "evaluate": lab.evaluate}
            for lab in VISTAS_V12_LABELS
        ],
        "version": "1.2",
        "mapping": "public",
        "folder_structure": "{split}/{content}/{key}.{ext}",
    }  # fmt: skip


def vistas_instances(scene: Scene) -> np.ndarray:
    """uint16: label*256 + per-label instance index (0 for classes without instances)."""
    lut = np.zeros(max((i.id for i in scene.instances), default=0) + 1, np.uint16)
    counters: dict[int, int] = {}
    for inst in scene.instances:
        if VISTAS_V12_LABELS[inst.label].instances:
            k = counters.get(inst.label, 0)
            counters[inst.label] = k + 1
            lut[inst.id] = min(k, 255)
    return scene.labels.astype(np.uint16) * 256 + lut[scene.instance_map]


def write_vistas_image(root: Path, split: str, index: int, scene: Scene) -> ImageRecord:
    key = vistas_key(scene)
    base = Path(root) / split
    atomic_write_bytes(base / "images" / f"{key}.jpg", encode_jpg(scene.image))
    atomic_write_bytes(base / "labels" / f"{key}.png", encode_palette_png(scene.labels, VISTAS_PALETTE))
    atomic_write_bytes(base / "instances" / f"{key}.png", encode_png(vistas_instances(scene)))
    return _record("vistas", split, key, scene)


def finish_vistas(root: Path, records: Sequence[ImageRecord]) -> None:
    atomic_write_json(Path(root) / "config.json", vistas_config())


# -- GTSDB -----------------------------------------------------------------------------------
def gtsdb_boxed(scene: Scene) -> list[Instance]:
    """The front signs gt.txt lists, left to right: every visible one; in a scene with sized sign boxes
    (the GTSDB domain) only those whose visible extent lies in the annotated range (16-128 px at
    1360 px width), like the benchmark, which boxes no smaller sign: what a nearer object leaves of
    a sign can be too small, and stays unboxed."""
    boxes = scene.sign_boxes
    out = []
    for inst in sorted(scene.instances, key=lambda i: (i.bbox[0], i.bbox[1], i.id)):
        if inst.gtsdb_class is None or inst.area == 0:
            continue
        x0, y0, x1, y1 = inst.bbox
        if boxes is None or boxes.annotated(x1 - x0 + 1, y1 - y0 + 1, scene.width):
            out.append(inst)
    return out


def _gt_line(name: str, inst: Instance) -> str:
    x0, y0, x1, y1 = inst.bbox
    return f"{name};{x0};{y0};{x1};{y1};{inst.gtsdb_class}"


def gtsdb_lines(name: str, scene: Scene) -> list[str]:
    """gt.txt lines: inclusive extent of each boxed front sign's visible pixels and its class."""
    return [_gt_line(name, inst) for inst in gtsdb_boxed(scene)]


def write_gtsdb_image(root: Path, split: str, index: int, scene: Scene) -> ImageRecord:
    name = f"{index:05d}.ppm"
    atomic_write_bytes(Path(root) / name, encode_ppm(scene.image))
    rec = _record("gtsdb", split, name, scene)
    boxed = gtsdb_boxed(scene)
    rec.gt_lines = [_gt_line(name, inst) for inst in boxed]
    rec.sign_classes = [int(i.gtsdb_class) for i in boxed]
    rec.sign_sizes = [max(i.bbox[2] - i.bbox[0], i.bbox[3] - i.bbox[1]) + 1 for i in boxed]
    return rec


def finish_gtsdb(root: Path, records: Sequence[ImageRecord]) -> None:
    lines = [line for rec in sorted(records, key=lambda r: r.name) for line in rec.gt_lines]
    atomic_write_text(Path(root) / "gt.txt", "".join(f"{line}\n" for line in lines))


# -- OpenScapes (Open Images style) ----------------------------------------------------------
def openscapes_image_id(scene: Scene) -> str:
    """16 lower-case hex characters, like Open Images ImageIDs."""
    return hashlib.sha256(f"openscapes:{scene.seed}".encode()).hexdigest()[:16]


def _tag_boxes(scene: Scene) -> list[tuple[str, object]]:
    """(tag, instance) pairs: every instance that is evidence for a tag."""
    by_label = {VISTAS_V12_ID[name]: tag for tag, names in _TAG_LABELS.items() for name in names}
    min_h = max(MIN_GENDER_PX, 0.04 * scene.height)
    out = []
    for inst in scene.instances:
        tag = by_label.get(inst.label)
        if tag is None:
            continue
        out.append((tag, inst))
        if tag == "person" and inst.subtype and inst.bbox[3] - inst.bbox[1] + 1 >= min_h:
            out.append((inst.subtype, inst))
        if tag == "traffic sign" and inst.gtsdb_class == STOP_SIGN_CLASS:
            out.append(("stop sign", inst))
    return out


def openscapes_tags(scene: Scene) -> tuple[list[str], list[str]]:
    """(positive tags, tags that are certainly absent) of a scene."""
    pairs = _tag_boxes(scene)
    positives = sorted({tag for tag, _ in pairs}, key=OPENSCAPES_TAGS.index)
    has_back = bool(np.any(scene.labels == VISTAS_V12_ID["object--traffic-sign--back"]))
    unsure = set()
    if "person" in positives:  # a person too small to tell man from woman is not a negative
        unsure |= {"man", "woman", "boy", "girl"}
    if has_back:  # a sign seen from behind could be any sign
        unsure |= {"traffic sign", "stop sign"}
    absent = [t for t in OPENSCAPES_TAGS if t not in positives and t not in unsure]
    return positives, absent


def write_openscapes_image(root: Path, split: str, index: int, scene: Scene) -> ImageRecord:
    image_id = openscapes_image_id(scene)
    root = Path(root)
    atomic_write_bytes(root / "images" / f"{image_id}.jpg", encode_jpg(scene.image, 90))
    atomic_write_bytes(root / "ground_truth" / f"{image_id}_vistas.png",
                       encode_palette_png(scene.labels, VISTAS_PALETTE))  # fmt: skip
    atomic_write_bytes(root / "ground_truth" / f"{image_id}_signs.png", encode_gray_png(scene.sign_classes()))
    rec = _record("openscapes", split, image_id, scene)
    positives, absent = openscapes_tags(scene)
    # A deterministic half of the certainly-absent tags become verified negatives.
    rng = np.random.default_rng([int(scene.seed) % (2**63), 7])
    negatives = [t for t in absent if rng.random() < 0.5]
    rec.tags = positives
    rec.label_rows = [[image_id, "verification", OPEN_IMAGES_MIDS[t], "1"] for t in positives]
    rec.label_rows += [[image_id, "verification", OPEN_IMAGES_MIDS[t], "0"] for t in negatives]
    w, h = scene.width, scene.height
    for tag, inst in _tag_boxes(scene):
        if inst.area < 4:
            continue
        x0, y0, x1, y1 = inst.bbox
        rec.box_rows.append([
            image_id, "xclick", OPEN_IMAGES_MIDS[tag], "1",
            f"{x0 / w:.6f}", f"{(x1 + 1) / w:.6f}", f"{y0 / h:.6f}", f"{(y1 + 1) / h:.6f}",
            str(int(inst.occluded)), str(int(inst.truncated)), "0", "0", "0",
        ])  # fmt: skip
    return rec


def finish_openscapes(root: Path, records: Sequence[ImageRecord]) -> None:
    root = Path(root)
    atomic_write_csv(root / "class-descriptions.csv",
                     [[OPEN_IMAGES_MIDS[t], t.capitalize()] for t in OPENSCAPES_TAGS])  # fmt: skip
    ordered = sorted(records, key=lambda r: r.name)
    atomic_write_csv(root / "image-labels.csv", [row for r in ordered for row in r.label_rows], IMAGE_LABELS_HEADER)
    atomic_write_csv(root / "boxes.csv", [row for r in ordered for row in r.box_rows], BOXES_HEADER)


# -- registry and whole-dataset writers -----------------------------------------------------
@dataclass(frozen=True)
class FormatWriter:
    image: Callable[[Path, str, int, Scene], ImageRecord]
    finish: Callable[[Path, Sequence[ImageRecord]], None]


WRITERS: dict[str, FormatWriter] = {
    "cityscapes": FormatWriter(write_cityscapes_image, finish_cityscapes),
    "vistas": FormatWriter(write_vistas_image, finish_vistas),
    "gtsdb": FormatWriter(write_gtsdb_image, finish_gtsdb),
    "openscapes": FormatWriter(write_openscapes_image, finish_openscapes),
}


def _write_all(fmt: str, root: Path, scenes: Iterable[tuple[str, Scene]]) -> list[ImageRecord]:
    writer = WRITERS[fmt]
    counters: dict[str, int] = {}
    records = []
    for split, scene in scenes:
        index = counters.get(split, 0) if fmt != "gtsdb" else split_number(split, counters.get(split, 0))
        counters[split] = counters.get(split, 0) + 1
        records.append(writer.image(Path(root), split, index, scene))
    writer.finish(Path(root), records)
    return records


def write_cityscapes(root: Path, scenes: Iterable[tuple[str, Scene]]) -> list[ImageRecord]:
    """Write (split, scene) pairs as a Cityscapes dataset (splits train/val/test)."""
    return _write_all("cityscapes", root, scenes)


def write_vistas(root: Path, scenes: Iterable[tuple[str, Scene]]) -> list[ImageRecord]:
    """Write (split, scene) pairs as Mapillary Vistas v1.2 (splits training/validation)."""
    return _write_all("vistas", root, scenes)


def write_gtsdb(root: Path, scenes: Iterable[tuple[str, Scene]]) -> list[ImageRecord]:
    """Write (split, scene) pairs as GTSDB (splits train/test), numbered like the benchmark: train
    00000.ppm, 00001.ppm, ..., test 00600.ppm, ... (:func:`training.data.readers.gtsdb.split_number`)."""
    return _write_all("gtsdb", root, scenes)


def write_openscapes(root: Path, scenes: Iterable[tuple[str, Scene]]) -> list[ImageRecord]:
    """Write (split, scene) pairs in the OpenScapes / Open Images CSV layout (one folder)."""
    return _write_all("openscapes", root, scenes)
