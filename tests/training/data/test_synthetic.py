"""The synthetic dataset generator: real files on disk, exact formats, exact ground truth.

One small-preset generation (module fixture) is inspected by most tests; scenes are
re-rendered from the same seeds (iter_scenes) to compare files with the renderer's truth.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from training.data.readers.label_tables import (
    CITYSCAPES_LABELS,
    CITYSCAPES_PNG_IDS,
    GTSDB_CLASSES,
    OPENSCAPES_TAGS,
    VISTAS_V12_ID,
    VISTAS_V12_LABELS,
)
from training.data.synthetic import writers
from training.data.synthetic.__main__ import main
from training.data.synthetic.domains import DOMAINS
from training.data.synthetic.generate import DATASETS, PRESETS, generate, iter_scenes, plan_tasks
from training.data.synthetic.scene import render_scene
from training.data.synthetic.sign_boxes import GTSDB_SIGN_BOXES
from training.data.synthetic.signs import IMPLEMENTED_CLASSES, sign_front
from training.data.synthetic.writers import (
    CITYSCAPES_FROM_VISTAS,
    OPEN_IMAGES_MIDS,
    VISTAS_TO_CITYSCAPES,
    FormatWriter,
    openscapes_image_id,
    vistas_key,
)

V = VISTAS_V12_ID
REQUIRED = [
    "nature--sky", "construction--flat--road", "marking--general", "marking--crosswalk-zebra",
    "construction--flat--crosswalk-plain", "construction--flat--bike-lane", "construction--flat--parking",
    "construction--flat--service-lane", "object--manhole", "object--catch-basin", "object--pothole",
    "construction--flat--sidewalk", "construction--barrier--curb", "construction--structure--building",
    "construction--barrier--wall", "construction--barrier--fence", "nature--vegetation", "nature--terrain",
    "object--support--pole", "object--support--traffic-sign-frame", "object--traffic-light",
    "object--vehicle--car", "object--vehicle--truck", "object--vehicle--bus", "human--person",
    "human--rider--bicyclist", "human--rider--motorcyclist", "object--vehicle--bicycle",
    "object--vehicle--motorcycle", "object--traffic-sign--front", "object--traffic-sign--back",
]  # fmt: skip


def _read(path: Path) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert arr is not None, path
    return arr


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    summary = generate(out, "small", seed=0, workers=1)
    return out, summary


# -- renderer -------------------------------------------------------------------------------
def test_render_is_deterministic_and_seed_dependent():
    a, b, c = render_scene(96, 160, 5, "vistas"), render_scene(96, 160, 5, "vistas"), render_scene(96, 160, 6, "vistas")
    for name in ("image", "labels", "instance_map"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.instances == b.instances
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(render_scene(96, 160, 5, "gtsdb").labels, a.labels)


@pytest.mark.parametrize(("h", "w"), [(37, 91), (300, 200), (64, 64), (129, 257)])
def test_any_resolution(h, w):
    s = render_scene(h, w, 3, "cityscapes")
    assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
    assert s.labels.shape == (h, w) and s.labels.dtype == np.uint8
    assert s.instance_map.shape == (h, w)
    assert s.labels.max() < len(VISTAS_V12_LABELS)
    for inst in s.instances:
        x0, y0, x1, y1 = inst.bbox
        assert 0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h


def test_instances_are_exact():
    for seed in range(3):
        s = render_scene(160, 320, seed, "openscapes")
        assert len({i.id for i in s.instances}) == len(s.instances)
        for inst in s.instances:
            ys, xs = np.nonzero(s.instance_map == inst.id)
            assert inst.area == xs.size > 0
            assert inst.bbox == (xs.min(), ys.min(), xs.max(), ys.max())
            assert (s.labels[ys, xs] == inst.label).all()
            assert (inst.gtsdb_class is not None) == (inst.label == V["object--traffic-sign--front"])
        known = {0} | {i.id for i in s.instances}
        assert set(np.unique(s.instance_map)) <= known


def test_per_instance_colour_variation():
    """Instances of one class differ in mean colour: colour alone does not name a class."""
    means: dict[int, list[np.ndarray]] = {}
    for seed in range(4):
        s = render_scene(256, 512, seed, "openscapes")
        for inst in s.instances:
            if inst.area >= 100 and inst.label in (V["object--vehicle--car"], V["human--person"]):
                means.setdefault(inst.label, []).append(s.image[s.instance_map == inst.id].mean(0))
    assert set(means) == {V["object--vehicle--car"], V["human--person"]}
    for label, ms in means.items():
        m = np.array(ms)
        assert len(m) >= 3, VISTAS_V12_LABELS[label].name
        pair_diff = np.abs(m[:, None, :] - m[None, :, :]).max(-1)[np.triu_indices(len(m), 1)]
        assert np.mean(pair_diff > 4.0) > 0.8, (VISTAS_V12_LABELS[label].name, pair_diff)
        assert np.ptp(m, axis=0).max() > 25, VISTAS_V12_LABELS[label].name


def test_sign_classes_have_distinct_glyphs():
    assert len(IMPLEMENTED_CLASSES) >= 12
    sprites = {}
    for c in IMPLEMENTED_CLASSES:
        sp = sign_front(c, 64, np.random.default_rng(0))
        assert sp.mask.any() and sp.rgb.shape[:2] == sp.mask.shape
        sprites[c] = np.where(sp.mask[..., None], sp.rgb, 0).astype(np.int16)
    for a in IMPLEMENTED_CLASSES:
        for b in IMPLEMENTED_CLASSES:
            if a < b:
                differing = int((np.abs(sprites[a] - sprites[b]).max(-1) > 60).sum())
                assert differing >= 24, (GTSDB_CLASSES[a], GTSDB_CLASSES[b], differing)


def test_sign_box_sizes_are_drawn_like_the_benchmarks():
    """Longer box side at 1360 px width: median ~38 px, p10 ~23 px, inside the annotated 16-128 px."""
    rng = np.random.default_rng(0)
    sizes = np.array([GTSDB_SIGN_BOXES.sample(rng, 1360) for _ in range(20000)])
    assert sizes.min() > 16 and sizes.max() < 128
    assert abs(np.median(sizes) - 38) < 1 and abs(np.percentile(sizes, 10) - 23) < 1
    half = np.array([GTSDB_SIGN_BOXES.sample(rng, 680) for _ in range(4000)])
    assert abs(np.median(half) - 19) < 1  # relative to the image: half the width, half the size
    boxes = GTSDB_SIGN_BOXES
    assert boxes.annotated(16, 10, 1360) and boxes.annotated(128, 128, 1360)
    assert not boxes.annotated(15, 15, 1360) and not boxes.annotated(129, 20, 1360)
    assert boxes.annotated(3, 2, 272) and not boxes.annotated(2, 2, 272) and not boxes.annotated(27, 9, 272)


def test_gtsdb_sign_classes_are_uniform():
    """Every one of the 43 classes is boxed, none much more often than the others (the other domains
    draw frequent real-world signs more often)."""
    style = replace(DOMAINS["gtsdb"], signs_per_image=24)
    boxed = [i.gtsdb_class for s in range(40) for i in writers.gtsdb_boxed(render_scene(160, 272, s, style))]
    counts = Counter(boxed)
    mean = len(boxed) / len(GTSDB_CLASSES)
    assert len(boxed) > 300 and set(counts) == set(range(len(GTSDB_CLASSES))) == set(IMPLEMENTED_CLASSES)
    assert max(counts.values()) < 2.0 * mean and min(counts.values()) > 0.25 * mean


def test_gtsdb_presets():
    """``large``: the benchmark's 1360x800 images and all 600 train numbers; ``small`` stays tiny."""
    large, small = plan_tasks("gtsdb", "large", 0), plan_tasks("gtsdb", "small", 0)
    assert {(t.width, t.height) for t in large} == {(1360, 800)}
    assert [t.index for t in large if t.split == "train"] == list(range(600))
    assert [t.index for t in large if t.split == "test"] == list(range(600, 660))
    assert {t.signs_per_image for t in large} == {24} and len(small) == 9
    assert {(t.width, t.height) for t in small} == {(272, 160)}


# -- generation as a whole ------------------------------------------------------------------
def test_every_required_class_appears(small):
    _, summary = small
    seen = {name for d in summary.datasets.values() for name, n in d.class_pixels.items() if n}
    missing = [name for name in REQUIRED if name not in seen]
    assert not missing


def test_same_seed_same_bytes_any_worker_count(small, tmp_path):
    out, _ = small
    generate(tmp_path, "small", seed=0, workers=2, only=["gtsdb", "vistas"])
    for name in ("gtsdb", "vistas"):
        a, b = _files(out / name), _files(tmp_path / name)
        a.pop("synthetic.json"), b.pop("synthetic.json")  # holds timings
        assert a == b


def test_different_seed_different_output(small, tmp_path):
    out, _ = small
    generate(tmp_path, "small", seed=1, workers=1, only=["cityscapes"])
    a = _read(next((out / "cityscapes" / "leftImg8bit" / "train").rglob("*.png")))
    b = _read(next((tmp_path / "cityscapes" / "leftImg8bit" / "train").rglob("*.png")))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_summary_and_metadata(small):
    out, summary = small
    assert set(summary.datasets) == set(DATASETS)
    text = summary.format()
    for name in DATASETS:
        meta = json.loads((out / name / "synthetic.json").read_text())
        assert meta["settings"]["seed"] == 0 and meta["settings"]["preset"] == "small"
        assert sum(meta["summary"]["splits"].values()) == 9
        assert name in text
    assert not list(out.rglob("*.tmp")) and not [p for p in out.iterdir() if p.name.startswith(".")]
    fields = [line.split(";") for line in (out / "gtsdb" / "gt.txt").read_text().splitlines()]
    sides = [max(int(f[3]) - int(f[1]), int(f[4]) - int(f[2])) + 1 for f in fields]
    z = summary.datasets["gtsdb"].sign_sizes
    assert (z["min"], z["max"], z["median"]) == (min(sides), max(sides), round(float(np.median(sides))))
    assert json.loads((out / "gtsdb" / "synthetic.json").read_text())["settings"]["signs_per_image"] == 8


# -- formats --------------------------------------------------------------------------------
def test_vistas_to_cityscapes_table():
    assert set(VISTAS_TO_CITYSCAPES) == {lab.name for lab in VISTAS_V12_LABELS}
    assert set(VISTAS_TO_CITYSCAPES.values()) <= CITYSCAPES_PNG_IDS
    t = VISTAS_TO_CITYSCAPES
    assert t["construction--flat--service-lane"] == t["construction--flat--bike-lane"] == t["marking--general"] == 7
    assert t["construction--flat--parking"] == 9 and t["construction--barrier--curb"] == 8
    assert t["object--traffic-sign--front"] == 20 and t["object--traffic-sign--back"] == 4
    assert t["object--support--traffic-sign-frame"] == 17 and t["human--rider--motorcyclist"] == 25
    assert t["object--vehicle--on-rails"] == 31 and t["void--ego-vehicle"] == 1 and t["void--unlabeled"] == 0


def test_cityscapes_format_and_truth(small):
    out, _ = small
    root = out / "cityscapes"
    colors = {lab.id: lab.color for lab in CITYSCAPES_LABELS if lab.id >= 0}
    scenes = list(iter_scenes("cityscapes", "small", 0))
    assert len(scenes) == 9
    for task, scene in scenes:
        city, stem = writers.cityscapes_name(task.split, task.index)
        assert re.fullmatch(r"[a-z]+_\d{6}_\d{6}", stem) and stem.startswith(city + "_")
        img = _read(root / "leftImg8bit" / task.split / city / f"{stem}_leftImg8bit.png")
        gt = root / "gtFine" / task.split / city
        ids = _read(gt / f"{stem}_gtFine_labelIds.png")
        inst = _read(gt / f"{stem}_gtFine_instanceIds.png")
        color = _read(gt / f"{stem}_gtFine_color.png")[..., ::-1]
        assert img.shape == (128, 256, 3) and img.dtype == np.uint8
        assert ids.shape == (128, 256) and ids.dtype == np.uint8 and inst.dtype == np.uint16
        assert set(np.unique(ids)) <= CITYSCAPES_PNG_IDS
        assert np.array_equal(ids, CITYSCAPES_FROM_VISTAS[scene.labels])
        assert np.array_equal(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), scene.image)
        is_inst = inst >= 1000
        assert np.array_equal(np.where(is_inst, inst // 1000, inst), ids)
        assert set(np.unique(ids[is_inst])) <= set(range(24, 34))
        for cid in np.unique(ids):
            assert (color[ids == cid] == colors[int(cid)]).all()
        poly = json.loads((gt / f"{stem}_gtFine_polygons.json").read_text())
        assert poly["imgHeight"] == 128 and poly["imgWidth"] == 256 and poly["objects"]
        assert all(len(o["polygon"]) >= 3 and isinstance(o["label"], str) for o in poly["objects"])
    assert sorted(p.name for p in (root / "gtFine").iterdir()) == ["train", "val"]


def test_vistas_format(small):
    out, _ = small
    root = out / "vistas"
    config = json.loads((root / "config.json").read_text())
    labels = config["labels"]
    assert len(labels) == 66 and config["version"].startswith("1.2")
    assert labels[65]["name"] == "void--unlabeled" and labels[65]["evaluate"] is False
    assert all(set(lab) == {"name", "readable", "color", "instances", "evaluate"} for lab in labels)
    assert all(lab["evaluate"] for lab in labels[:65])
    palette = np.array([lab["color"] for lab in labels], np.uint8)
    sizes = set()
    for task, scene in iter_scenes("vistas", "small", 0):
        key = vistas_key(scene)
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", key)
        base = root / task.split
        jpg = Image.open(base / "images" / f"{key}.jpg")
        assert jpg.format == "JPEG" and jpg.size == (scene.width, scene.height)
        lab = Image.open(base / "labels" / f"{key}.png")
        assert lab.mode == "P" and lab.format == "PNG"
        pal = np.array(lab.getpalette()[: 66 * 3], np.uint8).reshape(66, 3)
        assert np.array_equal(pal, palette)
        assert np.array_equal(np.array(lab), scene.labels)
        inst = _read(base / "instances" / f"{key}.png")
        assert inst.dtype == np.uint16 and np.array_equal(inst // 256, scene.labels)
        sizes.add((scene.width, scene.height))
    assert len(sizes) > 3  # Vistas images vary in size and aspect
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["training", "validation"]


def test_gtsdb_format_and_exact_boxes(small):
    out, summary = small
    root = out / "gtsdb"
    line_re = re.compile(r"^(\d{5}\.ppm);(\d+);(\d+);(\d+);(\d+);(\d+)$")
    lines = (root / "gt.txt").read_text().splitlines()
    parsed = {}
    for line in lines:
        m = line_re.match(line)
        assert m, line
        parsed.setdefault(m.group(1), []).append(tuple(int(g) for g in m.groups()[1:]))
    assert lines and sum(len(v) for v in parsed.values()) == sum(summary.datasets["gtsdb"].sign_counts.values())
    n_boxed = n_unboxed = 0
    for task, scene in iter_scenes("gtsdb", "small", 0):
        name = f"{task.index:05d}.ppm"
        data = (root / name).read_bytes()
        assert data.startswith(b"P6")
        assert (scene.width, scene.height) == (272, 160)
        assert np.array_equal(np.array(Image.open(io.BytesIO(data)).convert("RGB")), scene.image)
        boxes = sorted(parsed.get(name, []))
        expected, unboxed = [], []
        classes = scene.sign_classes()
        for inst in scene.instances:
            if inst.gtsdb_class is not None:
                ys, xs = np.nonzero(scene.instance_map == inst.id)
                box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
                side = max(box[2] - box[0], box[3] - box[1]) + 1
                # The benchmark's range, 16-128 px at 1360 px width: 3-26 px in these 272 px images.
                if 3 <= side <= 26:
                    expected.append((*box, inst.gtsdb_class))
                else:
                    unboxed.append(box)
        assert boxes == sorted(expected)
        n_boxed += len(boxes)
        n_unboxed += len(unboxed)
        for x0, y0, x1, y1, cls in boxes:  # inclusive and tight: every edge touches the sign
            crop = classes[y0 : y1 + 1, x0 : x1 + 1] == cls
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
        covered = np.zeros_like(classes, bool)  # no front pixel outside a box but those of unboxed signs
        for x0, y0, x1, y1, *_ in boxes + unboxed:
            covered[y0 : y1 + 1, x0 : x1 + 1] = True
        assert covered[classes != 255].all()
    assert n_boxed > 10 * n_unboxed  # what occlusion leaves too small is the exception


def test_openscapes_format(small):
    out, _ = small
    root = out / "openscapes"
    desc = (root / "class-descriptions.csv").read_text().splitlines()
    assert len(desc) == 14 and not desc[0].startswith("MID")
    assert {line.split(",")[1].lower() for line in desc} == set(OPENSCAPES_TAGS)
    assert {line.split(",")[0] for line in desc} == set(OPEN_IMAGES_MIDS.values())
    assert OPEN_IMAGES_MIDS["car"] == "/m/0k4j" and OPEN_IMAGES_MIDS["stop sign"] == "/m/02pv19"
    label_lines = (root / "image-labels.csv").read_text().splitlines()
    assert label_lines[0] == "ImageID,Source,LabelName,Confidence"
    box_lines = (root / "boxes.csv").read_text().splitlines()
    assert box_lines[0] == ",".join(writers.BOXES_HEADER)
    mid_tag = {m: t for t, m in OPEN_IMAGES_MIDS.items()}
    tags: dict[str, dict[str, str]] = {}
    for line in label_lines[1:]:
        image_id, _, mid, conf = line.split(",")
        assert conf in ("0", "1")
        tags.setdefault(image_id, {})[mid_tag[mid]] = conf
    for line in box_lines[1:]:
        f = line.split(",")
        x0, x1, y0, y1 = map(float, f[4:8])
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and f[2] in mid_tag
        assert tags[f[0]][mid_tag[f[2]]] == "1"  # every box class is an image-level positive
    front = V["object--traffic-sign--front"]
    for _, scene in iter_scenes("openscapes", "small", 0):
        image_id = openscapes_image_id(scene)
        assert re.fullmatch(r"[0-9a-f]{16}", image_id)
        assert Image.open(root / "images" / f"{image_id}.jpg").size == (scene.width, scene.height)
        gt = Image.open(root / "ground_truth" / f"{image_id}_vistas.png")
        assert gt.mode == "P" and np.array_equal(np.array(gt), scene.labels)
        signs = Image.open(root / "ground_truth" / f"{image_id}_signs.png")
        assert signs.mode == "L"
        signs = np.array(signs)
        assert np.array_equal(signs != 255, scene.labels == front)
        present = set(np.unique(scene.labels))
        mine = tags[image_id]
        assert (mine.get("car") == "1") == (V["object--vehicle--car"] in present)
        assert (mine.get("traffic light") == "1") == (V["object--traffic-light"] in present)
        assert (mine.get("traffic sign") == "1") == (front in present)
        assert (mine.get("stop sign") == "1") == bool((signs == 14).any())
        people = {V[n] for n in ("human--person", "human--rider--bicyclist", "human--rider--motorcyclist")}
        assert (mine.get("person") == "1") == bool(present & (people | {V["human--rider--other-rider"]}))
        for t, conf in mine.items():
            if conf == "0":
                assert t not in ("car", "person") or mine.get(t) != "1"
    assert sum(c == "1" for m in tags.values() for t, c in m.items() if t in ("man", "woman", "boy", "girl")) > 0


# -- atomicity and skipping ---------------------------------------------------------------
def test_failed_generation_leaves_no_dataset(tmp_path, monkeypatch):
    real = writers.WRITERS["cityscapes"]
    calls = []

    def boom(root, split, index, scene):
        calls.append(index)
        if len(calls) == 4:
            raise RuntimeError("disk full")
        return real.image(root, split, index, scene)

    monkeypatch.setitem(writers.WRITERS, "cityscapes", FormatWriter(boom, real.finish))
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path, "small", seed=0, only=["gtsdb", "cityscapes"])
    assert (tmp_path / "gtsdb" / "synthetic.json").exists()  # finished before the failure
    assert not (tmp_path / "cityscapes").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["gtsdb"]  # no partial leftovers


def test_interrupted_leftovers_are_hidden_and_cleaned(tmp_path):
    stale = tmp_path / ".gtsdb.partial-999999999-abc"  # a killed run: its pid is gone
    (stale / "sub").mkdir(parents=True)
    (stale / "00000.ppm").write_bytes(b"P6 half")
    generate(tmp_path, "small", seed=0, only=["gtsdb"])
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gtsdb"]


def test_complete_dataset_is_skipped_and_changed_settings_regenerate(tmp_path):
    first = generate(tmp_path, "small", seed=3, only=["gtsdb"])
    assert not first.datasets["gtsdb"].skipped
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "gtsdb").iterdir()}
    again = generate(tmp_path, "small", seed=3, only=["gtsdb"])
    assert again.datasets["gtsdb"].skipped
    assert again.datasets["gtsdb"].sign_counts == first.datasets["gtsdb"].sign_counts
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "gtsdb").iterdir()} == before
    old_gt = (tmp_path / "gtsdb" / "gt.txt").read_text()
    other = generate(tmp_path, "small", seed=4, only=["gtsdb"])
    assert not other.datasets["gtsdb"].skipped
    other_gt = (tmp_path / "gtsdb" / "gt.txt").read_text()
    assert other_gt != old_gt
    assert json.loads((tmp_path / "gtsdb" / "synthetic.json").read_text())["settings"]["seed"] == 4
    small = PRESETS["small"]
    fewer = replace(small, datasets={**small.datasets, "gtsdb": replace(small.datasets["gtsdb"], signs_per_image=2)})
    assert not generate(tmp_path, fewer, seed=4, only=["gtsdb"]).datasets["gtsdb"].skipped
    assert len((tmp_path / "gtsdb" / "gt.txt").read_text().splitlines()) < len(other_gt.splitlines())


def test_foreign_folder_is_not_replaced(tmp_path):
    (tmp_path / "gtsdb").mkdir()
    (tmp_path / "gtsdb" / "00000.ppm").write_bytes(b"real data")
    with pytest.raises(FileExistsError):
        generate(tmp_path, "small", seed=0, only=["gtsdb"])
    assert (tmp_path / "gtsdb" / "00000.ppm").read_bytes() == b"real data"


def test_command_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--only", "gtsdb", "--workers", "1", "--seed", "2"]) == 0
    text = capsys.readouterr().out
    assert "gtsdb" in text and "signs" in text and "train 6, test 3" in text
    assert re.search(r"box sizes +median \d+ px, p10 \d+ px, min \d+, max \d+", text)
    assert (tmp_path / "gtsdb" / "gt.txt").exists()
    assert main(["--out", str(tmp_path), "--only", "nope"]) == 2


def test_image_seeds_do_not_depend_on_selection():
    a = plan_tasks("vistas", "small", 0)
    b = plan_tasks("vistas", "small", 0)
    c = plan_tasks("gtsdb", "small", 0)
    assert a == b and {t.seed for t in a}.isdisjoint({t.seed for t in c})
