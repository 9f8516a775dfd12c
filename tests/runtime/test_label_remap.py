"""hiseg_ros.label_remap: remap tables loaded from real YAML files against real hierarchies (the tiny
test hierarchy and the shipped iv2018 one), applied to leaf maps, and their error messages."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_hierarchy import load_tiny

from hiseg_ros.hierarchy import hierarchy_from_dict, load_hierarchy
from hiseg_ros.label_remap import VOID, LabelRemapError, label_remap_from_dict, load_label_remap
from training import REPO

# tiny: root: road | sign | vehicle;  sign: front | back;  front: stop | yield;  vehicle: car | bus
# leaf ids: road 0, back 4, stop 5, yield 6, car 7, bus 8
TABLE = """name: coarse
hierarchy: tiny
classes: {0: ground, 1: traffic-sign, 2: vehicle, 7: stop-sign}
default: ground
map:
  sign: traffic-sign     # every sign leaf ...
  stop: stop-sign        # ... except the one a deeper entry names
  vehicle: 2             # by id
  bus: null              # void
"""


@pytest.fixture
def tiny(tmp_path):
    return load_tiny(tmp_path)


def _write(tmp_path, text, name="remap.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_leaf_map_in_the_target_label_space(tiny, tmp_path):
    remap = load_label_remap(_write(tmp_path, TABLE), tiny)
    assert remap.name == "coarse" and remap.source.endswith("remap.yaml")
    assert remap.classes == ((0, "ground"), (1, "traffic-sign"), (2, "vehicle"), (7, "stop-sign"))
    ids = {leaf.name: leaf.id for leaf in tiny.leaves}
    leaf_map = np.array(
        [[ids["road"], ids["back"], ids["stop"]], [ids["yield"], ids["car"], ids["bus"]], [tiny.void_value] * 3],
        dtype=tiny.mask_dtype,
    )
    out = remap.apply(leaf_map)
    assert out.dtype == np.uint8 and out.shape == leaf_map.shape
    # road: unmapped -> default; back/yield: via sign; stop: its own entry; car via vehicle; bus: void
    np.testing.assert_array_equal(out, [[0, 1, 7], [1, 2, VOID], [VOID, VOID, VOID]])
    assert remap.target_of(ids["stop"]) == 7


def test_default_is_void_unless_declared(tiny):
    remap = label_remap_from_dict({"name": "x", "classes": {3: "car"}, "map": {"car": "car"}}, tiny)
    assert [remap.target_of(leaf.id) for leaf in tiny.leaves] == [VOID, VOID, VOID, VOID, 3, VOID]


def test_uint16_leaf_maps_keep_their_void(tmp_path):
    classes = [
        {"name": "road", "id": 0, "parent": "root", "color": [1, 1, 1]},
        {"name": "car", "id": 300, "parent": "root", "color": [2, 2, 2]},
    ]
    h = hierarchy_from_dict({"name": "wide", "classes": classes}, "wide.yaml")
    assert h.mask_dtype is np.uint16
    remap = label_remap_from_dict(
        {"name": "x", "classes": {0: "other", 1: "car"}, "default": 0, "map": {"car": "car"}}, h
    )
    leaf_map = np.array([0, 300, h.void_value], np.uint16)
    np.testing.assert_array_equal(remap.apply(leaf_map), [0, 1, VOID])


def test_shipped_driving16_table_for_iv2018():
    h = load_hierarchy(REPO / "config" / "hierarchies" / "iv2018.yaml")
    remap = load_label_remap(REPO / "config" / "label_remaps" / "driving16.yaml", h)
    assert [tid for tid, _ in remap.classes] == list(range(16))
    names = dict(remap.classes)
    target = {leaf.name: names.get(remap.target_of(leaf.id), "void") for leaf in h.leaves}
    assert target["road"] == target["manhole"] == target["crosswalk-plain"] == "road"
    assert target["lane-marking-general"] == "lane-marking"  # overrides drivable
    assert target["sign-stop"] == target["traffic-sign-back"] == "traffic-sign"
    assert target["bicyclist"] == "rider" and target["truck"] == "truck-bus"
    assert target["bird"] == target["ego-vehicle"] == "void"
    assert set(target.values()) == set(names.values()) | {"void"}, "every target class receives a leaf"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            TABLE.replace("  stop: stop-sign", "  stopp: stop-sign"),
            r"remap\.yaml: map\.stopp: not a class of hierarchy 'tiny'",
        ),
        (TABLE.replace("  stop: stop-sign", "  root: ground"), r"remap\.yaml: map\.root: not a class"),
        (TABLE.replace("bus: null", "bus: lorry"), r"remap\.yaml: map\.bus: 'lorry' is not a target class .*ground"),
        (TABLE.replace("vehicle: 2 ", "vehicle: 3 "), r"remap\.yaml: map\.vehicle: 3 is not a target class"),
        (TABLE.replace("default: ground", "default: sky"), r"remap\.yaml: default: 'sky' is not a target class"),
        (
            TABLE.replace("7: stop-sign", "255: stop-sign"),
            r"remap\.yaml: classes\.255: target ids are integers 0\.\.254",
        ),
        (TABLE.replace("7: stop-sign", "7: ground"), r"remap\.yaml: classes\.7: target name 'ground' is also id 0"),
        (TABLE.replace("7: stop-sign", "x: stop-sign"), r"remap\.yaml: classes\.x: target ids are integers"),
        (TABLE.replace("7: stop-sign", "7: ''"), r"remap\.yaml: classes\.7: expected a non-empty target class name"),
        (
            TABLE.replace("hierarchy: tiny", "hierarchy: iv2018"),
            r"remap\.yaml: hierarchy: .*'iv2018', the model's is 'tiny'",
        ),
        (TABLE.replace("name: coarse", "nmae: coarse"), r"remap\.yaml: nmae: unknown key"),
        (TABLE.replace("name: coarse\n", ""), r"remap\.yaml: name: missing required key"),
        (TABLE + "  sign: vehicle\n", r"remap\.yaml: invalid YAML: .*duplicate key 'sign'"),
        ("name: x\nclasses: {0: a}\nmap: {}\n", r"remap\.yaml: map: expected a non-empty mapping"),
        ("[1, 2]\n", r"remap\.yaml: <top>: expected a mapping, got list"),
        ("name: [x\n", r"remap\.yaml: invalid YAML"),
    ],
    ids=lambda v: v if len(v) < 40 and "\n" not in v else None,
)
def test_errors_name_the_file_and_the_key(tiny, tmp_path, text, match):
    with pytest.raises(LabelRemapError, match=match):
        load_label_remap(_write(tmp_path, text), tiny)


def test_missing_file(tiny, tmp_path):
    with pytest.raises(LabelRemapError, match=r"nothere\.yaml: cannot read label remap file"):
        load_label_remap(tmp_path / "nothere.yaml", tiny)
