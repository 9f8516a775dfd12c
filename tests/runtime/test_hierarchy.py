"""The semantic hierarchy: shipped files, lookup tables, decision rule, JSON round trip, errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from hiseg_ros.hierarchy import (
    IGNORE,
    ROOT,
    Hierarchy,
    HierarchyError,
    flatten_hierarchy,
    load_hierarchy,
)
from training import REPO
from training.data.readers.label_tables import (
    CITYSCAPES_LABELS,
    GTSDB_CLASSES,
    OPENSCAPES_TAGS,
    VISTAS_V12_ID,
    VISTAS_V12_LABELS,
)

HIERARCHIES = REPO / "config" / "hierarchies"
SHIPPED = sorted(p.name for p in HIERARCHIES.glob("*.yaml"))


@pytest.fixture(scope="module")
def iv2018() -> Hierarchy:
    return load_hierarchy(HIERARCHIES / "iv2018.yaml")


@pytest.fixture(scope="module")
def iv2019() -> Hierarchy:
    return load_hierarchy(HIERARCHIES / "iv2019.yaml")


# --------------------------------------------------------------------------- shipped hierarchies
def test_shipped_hierarchies_include_paper_and_flat():
    assert {"iv2018.yaml", "iv2019.yaml", "iv2018_flat.yaml"} <= set(SHIPPED)


def test_iv2018_matches_the_paper(iv2018: Hierarchy):
    sizes = dict(iv2018.classifier_sizes)
    # 53 root classes (+ unlabeled as ignore), drivable 10, rider 3, front/back, 43 GTSDB classes.
    assert sizes == {"root": 53, "drivable": 10, "rider": 3, "traffic_sign": 2, "traffic_sign_front": 43}
    assert iv2018.classifier_names[0] == "root"
    assert len(iv2018.leaves) + 1 == 108  # the paper's 108 classes include "unlabeled"
    assert iv2018.classifier("traffic_sign").classes == ("traffic-sign-front", "traffic-sign-back")
    assert iv2018.node("traffic-sign-front").classifier == "traffic_sign_front"
    assert iv2018.mask_dtype is np.uint8
    for node in iv2018.classes:
        assert len(node.color) == 3


def test_iv2019_has_human_and_vehicle_subclassifiers(iv2019: Hierarchy):
    assert dict(iv2019.classifier_sizes) == {"root": 13, "human": 2, "vehicle": 6}
    # Leaves are exactly the 19 Cityscapes evaluation classes, id = train id.
    train = {lab.name.replace(" ", "-"): lab.train_id for lab in CITYSCAPES_LABELS if lab.train_id != IGNORE}
    assert {leaf.name: leaf.id for leaf in iv2019.leaves} == train


def test_flat_hierarchy_has_one_classifier_over_the_same_leaves(iv2018: Hierarchy):
    flat = load_hierarchy(HIERARCHIES / "iv2018_flat.yaml")
    assert flat.classifier_names == ("root",)
    assert {(n.name, n.id, n.color) for n in flat.leaves} == {(n.name, n.id, n.color) for n in iv2018.leaves}
    # Coarse ids: Cityscapes road becomes the "road" leaf (coarse_labels), rider is ignored.
    road = flat.targets("cityscapes", np.array([7], dtype=np.uint8))["root"][0]
    assert flat.classifier("root").classes[road] == "road"
    assert flat.targets("cityscapes", np.array([25], dtype=np.uint8))["root"][0] == IGNORE
    # Vistas road (a leaf) is unchanged and flattening is the identity on the root decision.
    leaf = flat.flatten({"root": np.arange(flat.classifier("root").num_classes)})
    assert [int(v) for v in leaf] == [flat.node(n).id for n in flat.classifier("root").classes]


def test_every_native_id_of_every_dataset_is_mapped(iv2018: Hierarchy, iv2019: Hierarchy):
    for h in (iv2018, iv2019):
        assert set(h.dataset("cityscapes").ids) == {lab.id for lab in CITYSCAPES_LABELS}
        assert set(h.dataset("vistas").ids) == set(range(len(VISTAS_V12_LABELS)))
        assert set(h.dataset("gtsdb").ids) == set(range(len(GTSDB_CLASSES)))
        assert set(h.dataset("openscapes").ids) == set(OPENSCAPES_TAGS)


# --------------------------------------------------------------------------- round trip
def _free_decisions(h: Hierarchy, targets: dict[str, int]) -> dict[str, np.ndarray]:
    """Every combination of decisions for the classifiers the targets leave free (IGNORE)."""
    axes = []
    for clf in h.classifiers:
        t = targets[clf.name]
        # Classifiers that do not lie on a path through this label cannot change the result:
        # sample two values to keep the product small.
        values = [t] if t != IGNORE else list(range(clf.num_classes))
        if t == IGNORE and clf.num_classes > 4 and not _under(h, clf, targets):
            values = [0, clf.num_classes - 1]
        axes.append(values)
    combos = np.array(list(itertools.product(*axes)), dtype=np.int64)
    return {clf.name: combos[:, i] for i, clf in enumerate(h.classifiers)}


def _under(h: Hierarchy, clf, targets: dict[str, int]) -> bool:
    """True when the target path reaches ``clf``'s node (so its decision matters)."""
    if clf.node == ROOT:
        return True
    parent_clf = h.classifier_of_node(h.node(clf.node).parent) if h.node(clf.node).parent != ROOT else None
    if parent_clf is None:
        return targets["root"] != IGNORE and h.classifier("root").classes[targets["root"]] == clf.node
    t = targets[parent_clf.name]
    return t != IGNORE and parent_clf.classes[t] == clf.node


@pytest.mark.parametrize("hierarchy_file", SHIPPED)
def test_native_targets_flatten_evaluation_round_trip(hierarchy_file: str):
    """For every native id of every per-pixel / box dataset: native -> targets -> decisions
    (all choices for classifiers the dataset does not supervise) -> leaf -> evaluation id equals
    the evaluation id of the native id itself."""
    h = load_hierarchy(HIERARCHIES / hierarchy_file)
    checked = 0
    for ds in h.datasets.values():
        if ds.supervision == "tags" or ds.evaluation is None:
            continue
        native_eval = h.native_to_eval_lut(ds.name)
        leaf_eval = h.leaf_to_eval_lut(ds.name)
        for native, node in ds.ids.items():
            if node is None or native < 0:
                continue
            targets = {k: int(v[0]) for k, v in h.targets(ds.name, np.array([native])).items()}
            decisions = _free_decisions(h, targets)
            leaves = h.flatten(decisions)
            leaf_native = h.leaf_to_native(ds.name)
            for leaf_id in np.unique(leaves):
                leaf = next(n for n in h.leaves if n.id == leaf_id)
                # The leaf always lies under (or is) the class the native id maps to ...
                assert leaf.name == node or node in h.ancestors(leaf.name)
                # ... and means the same evaluation class, unless the dataset itself labels that
                # leaf with another id (Cityscapes road -> drivable, but parking has its own id 9).
                other = leaf_native[leaf.name]
                if native_eval[native] == IGNORE:
                    continue  # not evaluated in this dataset (e.g. Cityscapes polegroup): any answer
                if (
                    other is not None
                    and other != native
                    and ds.ids[other] == node
                    and node not in {n.name for n in h.leaves}
                ):
                    # several natives labelled only as the same inner class on purpose (a weak-only
                    # hierarchy: truck / bus / train -> vehicle): the leaf cannot tell which one it was
                    continue
                if other is not None and other != native:
                    finer = ds.ids[other]
                    assert finer is not None and node in [finer, *h.ancestors(finer)] and finer != node, (
                        f"{hierarchy_file} {ds.name} native {native} ({node}) flattens to {leaf.name}, "
                        f"which means native {other} ({finer})"
                    )
                    continue
                assert leaf_eval[leaf_id] == native_eval[native], (
                    f"{hierarchy_file} {ds.name} native {native} ({node}) -> {leaf.name}: eval id "
                    f"{leaf_eval[leaf_id]}, expected {native_eval[native]}"
                )
            checked += 1
    assert checked > 0


def test_targets_follow_the_path(iv2018: Hierarchy):
    root = iv2018.classifier("root").classes
    drivable = iv2018.classifier("drivable").classes
    cs = iv2018.targets("cityscapes", np.array([[7, 20, 0]], dtype=np.uint8))
    # Cityscapes road is coarser than the tree: root says drivable, the drivable classifier is ignored.
    assert root[cs["root"][0, 0]] == "drivable" and cs["drivable"][0, 0] == IGNORE
    # Cityscapes traffic sign counts as front; the GTSDB classifier gets nothing.
    assert root[cs["root"][0, 1]] == "traffic-sign"
    assert iv2018.classifier("traffic_sign").classes[cs["traffic_sign"][0, 1]] == "traffic-sign-front"
    assert cs["traffic_sign_front"][0, 1] == IGNORE
    # unlabeled is ignored everywhere
    assert all(t[0, 2] == IGNORE for t in cs.values())
    vi = iv2018.targets("vistas", np.array([VISTAS_V12_ID["construction--flat--road"]], dtype=np.uint8))
    assert root[vi["root"][0]] == "drivable" and drivable[vi["drivable"][0]] == "road"
    assert vi["rider"][0] == IGNORE
    gt = iv2018.targets("gtsdb", np.array([14]))
    assert iv2018.classifier("traffic_sign_front").classes[gt["traffic_sign_front"][0]] == "sign-stop"
    tags = iv2018.dataset("openscapes").ids
    assert tags["stop sign"] == "sign-stop" and tags["man"] == "person"


def test_targets_reject_unmapped_ids(iv2018: Hierarchy):
    with pytest.raises(ValueError, match=r"cityscapes.*\[34, 200\]"):
        iv2018.targets("cityscapes", np.array([7, 34, 200], dtype=np.uint8))
    with pytest.raises(KeyError, match="no dataset 'kitti'"):
        iv2018.targets("kitti", np.zeros(1, dtype=np.uint8))


def test_decision_rule_of_the_paper(iv2018: Hierarchy):
    root = iv2018.classifier("root").classes
    ts = iv2018.classifier("traffic_sign").classes
    front = iv2018.classifier("traffic_sign_front").classes
    drivable = iv2018.classifier("drivable").classes
    n = 4
    dec = {c.name: np.zeros(n, dtype=np.uint8) for c in iv2018.classifiers}
    dec["root"][:] = [root.index("car"), root.index("drivable"), root.index("traffic-sign"), root.index("traffic-sign")]
    dec["drivable"][:] = drivable.index("manhole")
    dec["traffic_sign"][:] = [0, 0, ts.index("traffic-sign-back"), ts.index("traffic-sign-front")]
    dec["traffic_sign_front"][:] = front.index("sign-give-way")
    leaf = iv2018.flatten(dec)
    names = [next(x.name for x in iv2018.leaves if x.id == v) for v in leaf]
    assert names == ["car", "manhole", "traffic-sign-back", "sign-give-way"]
    masks = iv2018.classifier_masks(dec, leaf)
    # Sub-classifier masks are IGNORE outside their parent class.
    assert masks["drivable"].tolist() == [IGNORE, drivable.index("manhole"), IGNORE, IGNORE]
    assert masks["traffic_sign"].tolist() == [IGNORE, IGNORE, ts.index("traffic-sign-back"), 0]
    assert masks["traffic_sign_front"].tolist() == [IGNORE, IGNORE, IGNORE, front.index("sign-give-way")]
    assert masks["root"].tolist() == dec["root"].tolist()


def test_flatten_is_vectorised_over_images(iv2018: Hierarchy):
    rng = np.random.default_rng(0)
    dec = {c.name: rng.integers(0, c.num_classes, (2, 48, 64)).astype(np.uint8) for c in iv2018.classifiers}
    leaf = iv2018.flatten(dec)
    assert leaf.shape == (2, 48, 64) and leaf.dtype == np.uint8
    # Spot-check pixels against the rule applied one pixel at a time.
    for y, x in [(0, 0), (1, 47), (0, 13), (1, 5)]:
        single = {k: v[:, y, x] for k, v in dec.items()}
        assert (iv2018.flatten(single) == leaf[:, y, x]).all()
    with pytest.raises(ValueError, match="drivable.*10 classes"):
        iv2018.flatten(dec | {"drivable": np.full((2, 48, 64), 10, dtype=np.uint8)})


def test_leaf_to_native_uses_ancestry_and_overrides(iv2018: Hierarchy):
    cs = iv2018.leaf_to_native("cityscapes")
    assert cs["road"] == 7 and cs["lane-marking-general"] == 7  # via drivable
    assert cs["sign-stop"] == 20  # via traffic-sign-front
    assert cs["parking"] == 9 and cs["pole"] == 17  # 18 polegroup also maps to pole: evaluated id wins
    assert cs["curb"] == 8  # evaluation.leaf_ids override
    assert cs["boat"] is None and cs["traffic-sign-back"] is None
    lut = iv2018.leaf_to_eval_lut("cityscapes")
    assert lut[iv2018.node("road").id] == 0 and lut[iv2018.node("sign-stop").id] == 7
    assert lut[iv2018.node("parking").id] == IGNORE and lut[iv2018.void_value] == IGNORE


# --------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("hierarchy_file", SHIPPED)
def test_json_round_trip_is_identical(hierarchy_file: str):
    h = load_hierarchy(HIERARCHIES / hierarchy_file)
    text = h.to_json()
    back = Hierarchy.from_json(text)
    assert back == h
    assert back.to_json() == text
    assert back.classifier_sizes == h.classifier_sizes
    for ds in h.datasets.values():
        assert back.dataset(ds.name).ids == ds.ids  # int keys stay ints, tags stay strings
    structure = text.replace(json.dumps(h.description), "")
    assert "\n" not in structure and ": " not in structure and ", " not in structure  # compact


def test_json_errors_name_the_source():
    with pytest.raises(HierarchyError, match="model.onnx: not valid JSON"):
        Hierarchy.from_json("{", source="model.onnx")
    with pytest.raises(HierarchyError, match="model.onnx: schema"):
        Hierarchy.from_json('{"schema": 99}', source="model.onnx")


def test_uint16_leaf_maps_for_large_ids(tmp_path: Path):
    path = _write(
        tmp_path,
        "classes:\n  - {name: a, id: 300, parent: root, color: [1, 2, 3]}\n"
        "  - {name: b, id: 7, parent: root, color: [4, 5, 6]}\n",
    )
    h = load_hierarchy(path)
    assert h.mask_dtype is np.uint16 and h.void_value == 65535
    assert h.flatten({"root": np.array([0, 1])}).tolist() == [300, 7]


def test_flatten_hierarchy_validates_coarse_labels(iv2018: Hierarchy):
    with pytest.raises(HierarchyError, match="coarse_labels.road"):
        flatten_hierarchy(iv2018, "x", {"road": "road"})
    with pytest.raises(HierarchyError, match="coarse_labels.drivable.*not a leaf"):
        flatten_hierarchy(iv2018, "x", {"drivable": "rider"})


# --------------------------------------------------------------------------- errors
BASE = """name: test
classes:
  - {name: road, id: 0, parent: root, color: [128, 64, 128]}
  - {name: vehicle, id: 1, parent: root, color: [0, 0, 142]}
  - {name: car, id: 2, parent: vehicle, color: [0, 0, 142]}
  - {name: bus, id: 3, parent: vehicle, color: [0, 60, 100]}
datasets:
  toy:
    supervision: pixel
    id_range: [0, 2]
    ids:
      0: road
      1: car
      2: null
"""


def _write(tmp_path: Path, text: str, name: str = "h.yaml") -> Path:
    if not text.startswith("name:"):
        text = "name: test\n" + text
    path = tmp_path / name
    path.write_text(text)
    return path


def test_base_fixture_is_valid(tmp_path: Path):
    h = load_hierarchy(_write(tmp_path, BASE))
    assert h.classifier_sizes == [("root", 2), ("vehicle", 2)]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("parent: vehicle, color: [0, 0, 142]", "parent: vehicel, color: [0, 0, 142]"),
            r"classes\[2\] \(car\)\.parent: unknown parent 'vehicel'",
        ),
        (("{name: bus, id: 3", "{name: bus, id: 2"), r"classes\[3\] \(bus\)\.id: duplicate id 2"),
        (("{name: bus, id: 3", "{name: car, id: 3"), r"classes\[3\] \(car\)\.name: duplicate class name"),
        ((", color: [0, 60, 100]}", "}"), r"classes\[3\] \(bus\)\.color: missing required key"),
        (("[0, 60, 100]", "[0, 60, 300]"), r"classes\[3\] \(bus\)\.color: expected a colour"),
        (("      1: car\n", "      1: car\n      1: bus\n"), r"duplicate key 1 \(mapped twice\)"),
        (("      2: null\n", ""), r"datasets\.toy\.ids: native ids \[2\] of id_range \[0, 2\] are not mapped"),
        (("      0: road", "      0: roads"), r"datasets\.toy\.ids\.0: unknown class 'roads'"),
        (("supervision: pixel", "supervision: polygons"), r"datasets\.toy\.supervision: expected one of"),
        (("name: test\n", "name: test\ncolour_space: srgb\n"), r"colour_space: unknown key"),
        (("  - {name: bus, id: 3, parent: vehicle, color: [0, 60, 100]}\n", ""), r"single child 'car'"),
        (
            ("{name: road, id: 0, parent: root", "{name: road, id: 0, parent: root, classifier: x"),
            r"road\)\.classifier: given, but no class",
        ),
    ],
)
def test_invalid_files_name_file_and_key(tmp_path: Path, edit: tuple[str, str], message: str):
    old, new = edit
    assert old in BASE
    path = _write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(HierarchyError, match=message) as info:
        load_hierarchy(path)
    assert str(path) in str(info.value)


def test_cycle_is_reported(tmp_path: Path):
    text = BASE.replace(
        "  - {name: road",
        "  - {name: a, id: 10, parent: b, color: [1, 1, 1]}\n  - {name: b, id: 11, parent: a, color: [1, 1, 1]}\n"
        "  - {name: road",
    )
    with pytest.raises(HierarchyError, match=r"cycle in parents: a -> b -> a"):
        load_hierarchy(_write(tmp_path, text))


def test_ambiguous_evaluation_requires_leaf_ids(tmp_path: Path):
    text = (
        BASE.replace("      2: null\n", "      2: car\n")
        + "    evaluation:\n      classes: [[0, road], [1, car], [2, car2]]\n"
    )
    with pytest.raises(HierarchyError, match=r"leaf 'car' could mean native ids \[1, 2\].*leaf_ids"):
        load_hierarchy(_write(tmp_path, text))
    fixed = text + "      leaf_ids: {car: 1}\n"
    assert load_hierarchy(_write(tmp_path, fixed)).leaf_to_native("toy")["car"] == 1


def test_missing_and_unparsable_files(tmp_path: Path):
    with pytest.raises(HierarchyError, match="nope.yaml: cannot read"):
        load_hierarchy(tmp_path / "nope.yaml")
    with pytest.raises(HierarchyError, match="bad.yaml: invalid YAML"):
        load_hierarchy(_write(tmp_path, "classes: [\n", "bad.yaml"))


# ------------------------------------------------------------------ traffic-sign declaration
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_hierarchy_declares_its_traffic_signs(name: str):
    from hiseg_ros.outputs import sign_leaf_lut

    h = load_hierarchy(HIERARCHIES / name)
    expected = {
        "iv2018.yaml": (("traffic-sign-front",), 43),
        "iv2019.yaml": (("traffic-sign",), 1),
        "iv2019_weak_only.yaml": (("traffic-sign",), 1),  # iv2019's tree
        "iv2018_flat.yaml": (None, 43),  # the flat tree carries iv2018's declaration on the 43 sign leaves
    }[name]
    classes, leaves = expected
    if classes is not None:
        assert h.traffic_sign_classes == classes
    assert len(h.traffic_sign_leaves) == leaves
    lut = sign_leaf_lut(h)  # "" = the hierarchy's own declaration
    assert sorted(np.flatnonzero(lut).tolist()) == sorted(leaf.id for leaf in h.traffic_sign_leaves)
    again = Hierarchy.from_json(h.to_json())  # exported models embed the declaration
    assert again.traffic_sign_leaves == h.traffic_sign_leaves


def test_json_without_the_traffic_sign_key_still_loads(iv2018: Hierarchy):
    from hiseg_ros.outputs import sign_leaf_lut

    doc = json.loads(iv2018.to_json())
    for entry in doc["classes"]:
        entry.pop("traffic_sign", None)  # a model exported before the key existed
    old = Hierarchy.from_json(json.dumps(doc))
    assert old.traffic_sign_classes == () and old.classifier_sizes == iv2018.classifier_sizes
    with pytest.raises(KeyError, match="declares no traffic_sign class"):
        sign_leaf_lut(old)
    assert sign_leaf_lut(old, "traffic-sign-front").sum() == 43  # the parameter still names one


def test_traffic_sign_must_be_a_boolean(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nclasses:\n  - {name: a, id: 0, parent: root, color: [0, 0, 0], traffic_sign: yes-please}\n"
        "  - {name: b, id: 1, parent: root, color: [0, 0, 0]}\n"
    )
    with pytest.raises(HierarchyError, match=r"classes\[0\] \(a\)\.traffic_sign: expected true or false"):
        load_hierarchy(bad)
