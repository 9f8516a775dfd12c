"""The opt-in ``absent_vehicles`` option of the synthetic tag set: vehicle kinds left out of whole images.

Real files: small-preset OpenScapes folders written by the generator and read back with the tag
reader; the ground truth PNGs tell which classes are really in each picture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.data.readers import load_dataset
from training.data.readers.base import read_index_png
from training.data.readers.label_tables import VISTAS_V12_ID
from training.data.synthetic.__main__ import main
from training.data.synthetic.generate import generate, plan_tasks, task_style
from training.data.synthetic.population import ABSENT_KINDS, left_out_vehicles

KIND_LABELS = {
    "car": VISTAS_V12_ID["object--vehicle--car"],
    "truck": VISTAS_V12_ID["object--vehicle--truck"],
    "bus": VISTAS_V12_ID["object--vehicle--bus"],
}


def _present_kinds(root: Path, sample_id: str) -> set[str]:
    labels = read_index_png(root / "ground_truth" / f"{sample_id}_vistas.png")
    return {kind for kind, label in KIND_LABELS.items() if (labels == label).any()}


def test_share_zero_draws_nothing_and_leaves_the_fingerprint_alone(tmp_path: Path) -> None:
    """What keeps the default output byte-identical: no random draw and no new settings key at 0."""
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    assert left_out_vehicles(rng, 0.0) == frozenset()
    assert rng.bit_generator.state == state
    assert left_out_vehicles(np.random.default_rng(5), 1.0) == frozenset(ABSENT_KINDS)
    generate(tmp_path, "small", seed=0, only=["openscapes"])
    settings = json.loads((tmp_path / "openscapes" / "synthetic.json").read_text())["settings"]
    assert "absent_vehicles" not in settings
    assert all(task_style(t).absent_vehicles == 0 for t in plan_tasks("openscapes", "small", 0))
    # other datasets never get the option, whatever the flag says
    assert all(t.absent_vehicles == 0 for t in plan_tasks("vistas", "small", 0, absent_vehicles=0.5))


def test_share_one_leaves_every_vehicle_kind_out_and_the_tags_say_so(tmp_path: Path) -> None:
    generate(tmp_path, "small", seed=0, only=["openscapes"], absent_vehicles=1.0)
    root = tmp_path / "openscapes"
    reader = load_dataset("openscapes", root)
    assert len(reader) == 9
    for i, sample_id in enumerate(reader.sample_ids):
        assert _present_kinds(root, sample_id) == set()
        assert not set(reader[i].tags) & set(ABSENT_KINDS)
    negatives = {t for i in range(len(reader)) for t in reader.absent_tags(i)}
    assert {"car", "truck", "bus"} <= negatives  # half of the certainly absent tags become verified negatives
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["settings"]["absent_vehicles"] == 1.0
    assert not set(meta["summary"]["tag_counts"]) & set(ABSENT_KINDS)


def test_share_half_varies_the_kinds_per_image_and_changed_settings_regenerate(tmp_path: Path) -> None:
    generate(tmp_path, "small", seed=1, only=["openscapes"])
    root = tmp_path / "openscapes"
    ids = load_dataset("openscapes", root).sample_ids
    default_kinds = {i: _present_kinds(root, i) for i in ids}
    again = generate(tmp_path, "small", seed=1, only=["openscapes"], absent_vehicles=0.5)
    assert not again.datasets["openscapes"].skipped  # another fingerprint: the folder is rebuilt
    assert load_dataset("openscapes", root).sample_ids == ids  # same seeds, same image ids
    half_kinds = {i: _present_kinds(root, i) for i in ids}
    assert sum(len(k) for k in half_kinds.values()) < sum(len(k) for k in default_kinds.values())
    assert len({frozenset(k) for k in half_kinds.values()}) > 1  # not the same kinds left out everywhere
    assert "car" in set().union(*half_kinds.values())  # 0.5 leaves some cars in
    assert generate(tmp_path, "small", seed=1, only=["openscapes"], absent_vehicles=0.5).datasets["openscapes"].skipped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"only": ["cityscapes"], "absent_vehicles": 0.5}, "openscapes tag set only"),
        ({"only": ["openscapes"], "absent_vehicles": 1.5}, r"probability in \[0, 1\], got 1.5"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, "small", seed=0, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_command_line_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--only", "openscapes", "--workers", "1", "--absent-vehicles", "1"]
    assert main(argv) == 0
    assert "openscapes" in capsys.readouterr().out
    positives = [r for r in (tmp_path / "openscapes" / "image-labels.csv").read_text().splitlines() if r.endswith(",1")]
    mids = json.loads((tmp_path / "openscapes" / "synthetic.json").read_text())["summary"]["tag_counts"]
    assert positives and "car" not in mids
    assert main(["--out", str(tmp_path / "x"), "--only", "gtsdb", "--absent-vehicles", "0.5"]) == 2
    assert "openscapes tag set only" in capsys.readouterr().err
