"""docs/results/learning.json is built from the files the runs write, in the issue's layout."""

from __future__ import annotations

import json
from pathlib import Path

from training.jobs.learning_summary import main, summarise


def _variant(cityscapes: float, sign_given: float) -> dict:
    return {
        "classifiers": {"root": 0.3},
        "datasets": {"cityscapes": cityscapes, "vistas": 0.2},
        "cityscapes_classes": {"road": 0.9, "traffic sign": 0.05},
        "signs": {"miou": 0.0, "pixel_accuracy": 0.0},
        "signs_given_location": {"miou": sign_given, "pixel_accuracy": 0.2},
        "train_seconds": 300.4,
        "iterations": 150,
        "crop": [192, 384],
    }


METRICS = {
    "frames": {"in_bag": 60, "with_outputs": 60, "dropped": 0},
    "evaluation": {"datasets": {"cityscapes": {"miou": 0.3219}}},
    "signs": {
        "all": {"overall": {"truth": 142, "recall": 0.0, "class_accuracy": None}},
        "at_least_24px": {"overall": {"truth": 7, "recall": 0.5714, "class_accuracy": 0.25}},
    },
}


def test_summary_in_the_documented_layout(tmp_path: Path) -> None:
    experiments = {"pixel_boxes_tags": _variant(0.35, 0.047), "flat": _variant(0.28, 0.01), "pixel": _variant(0.3, 0)}
    out = summarise({"notes": "old", "keep": 1}, experiments, METRICS, 1027.4, {"rows": [{"weight": 1.0}]}, today="D")
    assert out["keep"] == 1 and out["measured"] == "D" and out["notes"] == "old"
    keys = {"sign_miou_end_to_end", "sign_miou_given_location", "sign_pixel_acc_given_location"}
    keys |= {"root_traffic_sign_iou", "cityscapes_miou"}
    assert keys <= set(out["hierarchical"]) and keys <= set(out["flat"])
    assert out["hierarchical"]["cityscapes_miou"] == 35.0 and out["flat"]["cityscapes_miou"] == 28.0
    assert out["hierarchical"]["sign_miou_given_location"] == 4.7
    assert out["hierarchical"]["root_traffic_sign_iou"] == 5.0
    main_job = out["main_job"]
    assert main_job["wall_s"] == 1027 and main_job["cityscapes_miou"] == 32.19
    assert main_job["sign_recall"] == 57.14 and main_job["sign_class_accuracy"] == 25.0  # signs >= 24 px
    assert main_job["sign_recall_all_sizes"] == 0.0 and main_job["sign_truth"] == 7 and main_job["frames"] == 60
    assert out["head_health"] == [{"weight": 1.0}]


def test_command_updates_only_the_parts_it_is_given(tmp_path: Path) -> None:
    target = tmp_path / "learning.json"
    earlier = {"hierarchical": {"cityscapes_miou": 1.0}, "main_job": {"wall_s": 5}, "commands": ["experiments"]}
    target.write_text(json.dumps(earlier))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    assert main(["--out", str(target), "--main-job", str(metrics), "--command", "bash scripts/demo.sh"]) == 0
    written = json.loads(target.read_text())
    assert written["hierarchical"] == {"cityscapes_miou": 1.0}  # untouched
    assert written["main_job"]["cityscapes_miou"] == 32.19 and written["main_job"]["wall_s"] is None
    # the hierarchical figures' command stays beside the new one; a repeated command is listed once
    assert written["commands"] == ["experiments", "bash scripts/demo.sh"]
    assert main(["--out", str(target), "--main-job", str(metrics), "--command", "bash scripts/demo.sh"]) == 0
    assert json.loads(target.read_text())["commands"] == ["experiments", "bash scripts/demo.sh"]


def test_experiments_from_several_folders_are_merged(tmp_path: Path) -> None:
    """Variants trained side by side write their own results.json; both reach the summary."""
    hier, flat = tmp_path / "hier.json", tmp_path / "flat.json"
    hier.write_text(json.dumps({"pixel_boxes_tags": _variant(0.35, 0.047)}))
    flat.write_text(json.dumps({"flat": _variant(0.28, 0.01)}))
    target = tmp_path / "learning.json"
    assert main(["--out", str(target), "--experiments", str(hier), "--experiments", str(flat)]) == 0
    written = json.loads(target.read_text())
    assert written["hierarchical"]["cityscapes_miou"] == 35.0 and written["flat"]["cityscapes_miou"] == 28.0


def test_main_job_variants_are_kept_by_name(tmp_path: Path) -> None:
    target = tmp_path / "learning.json"
    target.write_text(json.dumps({"main_job_variants": {"old": {"cityscapes_miou": 1.0}, "a": {"x": 1}}}))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({**METRICS, "evaluation": {**METRICS["evaluation"], "classifiers": {"root": 0.5}}}))
    assert main(["--out", str(target), "--main-job-variant", f"a={metrics}"]) == 0
    written = json.loads(target.read_text())["main_job_variants"]
    assert written["old"] == {"cityscapes_miou": 1.0}  # another variant stays
    assert written["a"]["cityscapes_miou"] == 32.19 and written["a"]["classifiers_miou"] == {"root": 50.0}
    assert written["a"]["sign_recall"] == 57.14 and written["a"]["wall_s"] is None
