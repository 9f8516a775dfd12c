"""Pseudo labels from image-level tags: Grad-CAM, erasing, Algorithm 1, CRF, generators, command."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hiseg_ros.hierarchy import load_hierarchy
from training import REPO
from training.data.readers.base import Sample
from training.labels.node_distribution import PseudoLabelError
from training.labels.pseudo_labels import (
    Algorithm1Config,
    CRFConfig,
    ErasingConfig,
    algorithm1,
    cam_only_labels,
    crf_refine,
    grad_cam,
    iterative_saliency,
)
from training.labels.pseudo_labels.__main__ import main
from training.labels.pseudo_labels.batch import SETTINGS_FILE, SKIPPED_FILE, generate_labels
from training.labels.pseudo_labels.classifier import TagClassifier, TrainConfig, save_classifier, tag_node_space
from training.labels.pseudo_labels.generator import GeneratorConfig, PrecomputedLabels, WeakLabelGenerator
from training.labels.pseudo_labels.saliency import OpenCVSaliency
from training.labels.targets import weak_targets

HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"


@pytest.fixture(scope="module")
def hierarchy():
    return load_hierarchy(HIERARCHY)


# --------------------------------------------------------------------------- Grad-CAM
def test_grad_cam_of_a_linear_score_is_the_weighted_activation_sum():
    # score_c = sum_k w_ck * mean(A_k): dy/dA_k = w_ck / 4 everywhere, so alpha_k = w_ck / 4.
    a = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]]], requires_grad=True)
    w = torch.tensor([[4.0, -4.0], [0.0, 2.0]])
    scores = a.mean(dim=(2, 3)) @ w.T
    cams = grad_cam(a, scores, [0, 1], normalise=False)
    # class 0: ReLU(1*A_0 - 1*A_1) = [[1, 0], [0, 0]] (the -2 is clipped); class 1: 0.5*A_1 = [[0,0],[0,1]]
    assert torch.allclose(cams[0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(cams[1], torch.tensor([[0.0, 0.0], [0.0, 1.0]]))


def test_grad_cam_uses_mean_gradients_and_normalises_per_class():
    # score = sum(A_0^2): gradient 2*A_0, alpha_0 = mean(2*A_0) = 1.5 for A_0 = [[1, 2], [0, 0]].
    a = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]]], requires_grad=True)

    def scores() -> torch.Tensor:
        return torch.stack([(a[0, 0] ** 2).sum(), -a[0, 1].sum() * 0.0])

    raw = grad_cam(a, scores(), [0], normalise=False)
    assert torch.allclose(raw[0], 1.5 * torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    cams = grad_cam(a, scores(), [0, 1], out_size=(4, 4))
    assert cams.shape == (2, 4, 4)
    assert float(cams[0].max()) == pytest.approx(1.0) and float(cams[0].min()) >= 0.0
    assert float(cams[1].abs().max()) == 0.0  # zero gradient -> zero map, no NaN


def test_tag_classifier_attention_shapes():
    torch.manual_seed(0)
    model = TagClassifier(("car", "person"), TrainConfig(input_size=(32, 48), pretrained=None, freeze_blocks=0))
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    cams = model.attention(image, ["person"], (40, 60))
    assert cams.shape == (1, 40, 60) and cams.min() >= 0.0 and cams.max() <= 1.0
    with pytest.raises(ValueError, match="no output for nodes"):
        model.attention(image, ["bus"], (40, 60))


# --------------------------------------------------------------------------- erasing
def test_iterative_erasing_thresholds_mean_pixel_and_max():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 0] = 90  # mean pixel of the image = 90 / 6 = 15
    seen = []
    maps = [
        np.array([[0.9, 0.71, 0.2], [0.1, 0.1, 0.1]], np.float32),  # erase > 0.7: (0,0), (0,1)
        np.array([[0.0, 0.0, 0.85], [0.79, 0.0, 0.0]], np.float32),  # erase > 0.8: (0,2) only
        np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0]], np.float32),
    ]

    def fake(img: np.ndarray) -> np.ndarray:
        seen.append(img.copy())
        return maps[len(seen) - 1]

    final, rounds = iterative_saliency(image, fake, ErasingConfig((0.7, 0.8)))
    assert len(seen) == 3 and len(rounds) == 3
    assert (seen[0] == image).all()
    assert (seen[1][0, 0] == 15).all() and (seen[1][0, 1] == 15).all() and (seen[1][0, 2] == 0).all()
    assert (seen[2][0, 2] == 15).all() and (seen[2][1, 0] == 0).all()  # 0.79 is not above 0.8
    assert (seen[2][0, 0] == 15).all()  # erasure accumulates
    np.testing.assert_allclose(final, np.maximum.reduce(maps))
    assert (image[0, 0] == 90).all()  # input untouched


def test_erasing_config_validation_names_the_key():
    with pytest.raises(ValueError, match="erasing.thresholds"):
        ErasingConfig((0.7, 1.5))
    with pytest.raises(ValueError, match=r"^erasing\.threshold: unknown key \(expected one of thresholds\)"):
        ErasingConfig.from_dict({"threshold": [0.7]})


# --------------------------------------------------------------------------- Algorithm 1
def test_algorithm1_on_hand_made_maps():
    cams = np.array(
        [
            [[0.9, 0.1, 0.3, 0.0], [0.5, 0.5, 0.0, 0.9]],  # class 0
            [[0.1, 0.8, 0.1, 0.0], [0.6, 0.4, 0.0, 0.0]],  # class 1
        ],
        np.float32,
    )
    sal = np.array([[0.5, 0.5, 0.05, 0.9], [0.5, 0.5, 0.3, 0.05]], np.float32)
    labels = algorithm1(cams, sal, Algorithm1Config(0.2, 0.06))
    # (0,2): S < gamma2; (0,3): M = 0.45 -> class 0; (1,2): M = 0.15 < gamma1; (1,3): S < gamma2
    expected = np.array([[0, 1, -1, 0], [1, 0, -1, -1]])
    np.testing.assert_array_equal(labels, expected)
    # a stricter gamma1 turns weak pixels into background
    assert (algorithm1(cams, sal, Algorithm1Config(0.7, 0.06)) == np.array([[0, -1, -1, -1], [-1, -1, -1, -1]])).all()
    np.testing.assert_array_equal(cam_only_labels(cams, 0.2), [[0, 1, 0, -1], [1, 0, -1, 0]])
    assert (algorithm1(np.zeros((0, 2, 4)), sal) == -1).all()


def test_algorithm1_config_validation():
    with pytest.raises(ValueError, match="algorithm1.gamma1"):
        Algorithm1Config(gamma1=2.0)
    with pytest.raises(ValueError, match=r"^algorithm1\.gamma3: unknown key"):
        Algorithm1Config.from_dict({"gamma3": 0.1})


# --------------------------------------------------------------------------- CRF
def _two_region_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left half dark, right half bright (the object); weak class-0 attention leaks 6 px into the dark half."""
    h, w = 24, 32
    image = np.zeros((h, w, 3), np.uint8)
    image[:, 16:] = 220
    cams = np.zeros((1, h, w), np.float32)
    cams[0, :, 10:16] = 0.4  # leak: M = 0.25, just above gamma1
    cams[0, :, 16:] = 0.9
    sal = np.full((h, w), 0.1, np.float32)
    sal[:, 16:] = 0.6
    return image, cams, sal


def test_crf_without_iterations_equals_algorithm1():
    image, cams, sal = _two_region_scene()
    np.testing.assert_array_equal(crf_refine(image, cams, sal, config=CRFConfig(iterations=0)), algorithm1(cams, sal))


def test_crf_snaps_labels_to_colour_edges():
    image, cams, sal = _two_region_scene()
    before = algorithm1(cams, sal)
    assert (before[:, 10:16] == 0).all()  # leak into the dark half
    after = crf_refine(image, cams, sal, config=CRFConfig(bilateral_sxy=20))
    truth = np.full(after.shape, -1)
    truth[:, 16:] = 0
    assert (before == truth).mean() == pytest.approx(26 / 32)
    assert (after == truth).mean() > 0.95


def test_crf_config_validation():
    with pytest.raises(ValueError, match="crf.bilateral_srgb"):
        CRFConfig(bilateral_srgb=0)
    with pytest.raises(ValueError, match=r"^crf\.iters: unknown key"):
        CRFConfig.from_dict({"iters": 3})


# --------------------------------------------------------------------------- saliency
def test_opencv_saliency_range_and_shape():
    image = np.full((40, 50, 3), 100, np.uint8)
    image[15:25, 20:30] = (250, 10, 10)
    for method in ("spectral_residual", "fine_grained"):
        sal = OpenCVSaliency(method)(image)
        assert sal.shape == (40, 50) and sal.dtype == np.float32
        assert sal.min() >= 0.0 and sal.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="saliency.method"):
        OpenCVSaliency("itti")


# --------------------------------------------------------------------------- generators
@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, hierarchy):
    torch.manual_seed(0)
    nodes = tag_node_space(hierarchy, "openscapes")
    model = TagClassifier(nodes, TrainConfig(input_size=(32, 48), pretrained=None, freeze_blocks=0))
    path = tmp_path_factory.mktemp("cls") / "classifier.pt"
    save_classifier(model, path)
    return path


def _settings(classifier: Path, **stages: bool) -> dict:
    return {
        "classifier": str(classifier),
        "saliency": {"source": "spectral_residual"},
        "stages": {"saliency": True, "erasing": True, "crf": True, **stages},
        "work_max_side": 48,
    }


def _sample(tags: tuple[str, ...], shape=(30, 40)) -> Sample:
    image = np.random.default_rng(1).integers(0, 255, (*shape, 3), dtype=np.uint8)
    return Sample("openscapes", "s1", image, None, tags=tags)


def test_generator_hard_and_soft_feed_the_training_seam(hierarchy, tiny_classifier):
    from training.labels.pseudo_labels.classifier import load_classifier

    model = load_classifier(tiny_classifier)
    for output in ("hard", "soft"):
        config = GeneratorConfig.from_dict({**_settings(tiny_classifier), "output": output})
        gen = WeakLabelGenerator(hierarchy, model, OpenCVSaliency(), config)
        dist = gen(_sample(("car", "man")))
        assert dist.shape == (30, 40) and set(dist.nodes) == {"car", "person"}
        assert dist.hard == (output == "hard")
        weak_targets(hierarchy, dist, 0.01)  # consumable by the loss
        assert {"gradcam", "saliency", "crf"} <= set(gen.timings)
    assert not gen(_sample(())).nodes  # no tags -> void
    with pytest.raises(PseudoLabelError, match="unknown tag"):
        gen(_sample(("zebra",)))
    with pytest.raises(PseudoLabelError, match="empty image"):
        gen(Sample("openscapes", "z", np.zeros((0, 5, 3), np.uint8), None, tags=("car",)))


def test_generator_config_round_trip_and_errors(tiny_classifier):
    cfg = GeneratorConfig.from_dict(_settings(tiny_classifier))
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"^gamma: unknown key \(expected one of algorithm1, classifier,"):
        GeneratorConfig.from_dict({"gamma": 1})
    with pytest.raises(ValueError, match="stages.crf"):
        GeneratorConfig.from_dict({"stages": {"crf": "yes"}})
    with pytest.raises(ValueError, match="need 'saliency'"):
        GeneratorConfig.from_dict({"stages": {"saliency": False}})
    with pytest.raises(ValueError, match="saliency.source"):
        GeneratorConfig.from_dict({"saliency": {"source": "magic"}})


# --------------------------------------------------------------------------- the command
def _write_dataset(root: Path) -> None:
    """Tiny OpenScapes-format set: 4 good images, one without tags, one empty file."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = ["a1", "a2", "a3", "a4", "notags", "zero"]
    for i in ids[:5]:
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), rng.integers(0, 255, (24, 36, 3), dtype=np.uint8))
    (root / "images" / "zero.jpg").write_bytes(b"")
    (root / "class-descriptions.csv").write_text("/m/0k4j,Car\n/m/01g317,Person\n")
    rows = ["ImageID,Source,LabelName,Confidence"]
    rows += [f"{i},verification,/m/0k4j,1" for i in ids[:4]] + ["a2,verification,/m/01g317,1", "zero,x,/m/0k4j,1"]
    (root / "image-labels.csv").write_text("\n".join(rows) + "\n")


def test_generate_command_resumable_atomic_settings_and_bad_inputs(tmp_path, hierarchy, tiny_classifier):
    data, out = tmp_path / "data", tmp_path / "labels"
    _write_dataset(data)
    settings = _settings(tiny_classifier)
    report = generate_labels("openscapes", data, HIERARCHY, settings, out, workers=1, progress=False)
    assert report.done == 4 and set(report.skipped) == {"notags", "zero"}
    assert "no tags" in report.skipped["notags"] and "unreadable" in report.skipped["zero"]
    assert json.loads((out / SKIPPED_FILE).read_text()).keys() == {"notags", "zero"}
    recorded = json.loads((out / SETTINGS_FILE).read_text())
    assert recorded["generator"] == GeneratorConfig.from_dict(settings).to_dict()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a1.png", "a2.png", "a3.png", "a4.png", SETTINGS_FILE, SKIPPED_FILE]
    )  # no temporary files left behind
    loader = PrecomputedLabels(hierarchy, out)
    s = _sample(("car",), (24, 36))
    s.sample_id = "a2"
    dist = loader(s)
    assert dist.shape == (24, 36) and dist.hard
    s.sample_id = "notags"
    with pytest.raises(PseudoLabelError, match="no precomputed pseudo label"):
        loader(s)
    # resumable: a second run labels nothing new; a deleted label is redone
    (out / "a3.png").unlink()
    again = generate_labels("openscapes", data, HIERARCHY, settings, out, workers=1, progress=False)
    assert again.already == 3 and again.done == 1
    # different settings into the same folder are refused
    with pytest.raises(ValueError, match="different settings"):
        generate_labels("openscapes", data, HIERARCHY, {**settings, "work_max_side": 32}, out, workers=1)
    # the CLI: exit code 1 when some images have no label, count in the summary
    code = main(["generate", "--data", str(data), "--out", str(out), "--hierarchy", str(HIERARCHY),
                 "--classifier", str(tiny_classifier), "--saliency", "spectral_residual",
                 "--stages", "saliency,erasing,crf", "--workers", "1", "--no-progress",
                 "--config", str(_write_yaml(tmp_path, {"work_max_side": 48}))])  # fmt: skip
    assert code == 1


def _write_yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "gen.yaml"
    path.write_text(json.dumps(data))
    return path


def test_generate_with_workers_survives_a_crashed_worker(tmp_path, tiny_classifier, monkeypatch):
    import subprocess
    import sys

    data, out = tmp_path / "data", tmp_path / "labels"
    _write_dataset(data)
    # what a sibling worker leaves when the broken pool terminates it mid-write (its pid is gone)
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    out.mkdir()
    (out / f".a1.png.{dead_pid}-0123abcd.tmp").write_bytes(b"half a png")
    monkeypatch.setenv("HISEG_PSEUDO_CRASH_ON", "a3")
    settings = _settings(tiny_classifier, erasing=False, crf=False)
    report = generate_labels("openscapes", data, HIERARCHY, settings, out, workers=2, progress=False)
    assert "a3" in report.skipped and "crashed" in report.skipped["a3"]
    assert not (out / "a3.png").exists()
    assert report.done + len(report.skipped) == 6
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    monkeypatch.delenv("HISEG_PSEUDO_CRASH_ON")
    rerun = generate_labels("openscapes", data, HIERARCHY, settings, out, workers=1, progress=False)
    assert (out / "a3.png").is_file() and rerun.already + rerun.done == 4


def test_cli_stages_flag_empty_means_cam_only(tmp_path):
    from training.labels.pseudo_labels.__main__ import build_parser, settings_from_args

    args = build_parser().parse_args(["generate", "--data", "d", "--out", "o", "--stages", ""])
    settings = settings_from_args(args)
    assert settings["stages"] == {"saliency": False, "erasing": False, "crf": False}
    assert not GeneratorConfig.from_dict(settings).saliency
    args = build_parser().parse_args(["generate", "--data", "d", "--out", "o", "--stages", "saliency,crf,sharpen"])
    with pytest.raises(ValueError, match="sharpen"):
        settings_from_args(args)


def test_cli_with_worker_processes_as_a_module(tmp_path, tiny_classifier):
    """``python -m training.labels.pseudo_labels`` with spawn workers (they must import the worker functions)."""
    import subprocess
    import sys

    data, out = tmp_path / "data", tmp_path / "labels"
    _write_dataset(data)
    cmd = [sys.executable, "-m", "training.labels.pseudo_labels", "generate", "--data", str(data), "--out", str(out),
           "--hierarchy", str(HIERARCHY), "--classifier", str(tiny_classifier), "--stages", "",
           "--workers", "2", "--no-progress"]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr  # two images cannot be labelled
    assert "labelled 4 images" in run.stdout and "2 without a label" in run.stdout, run.stdout + run.stderr
    assert len(list(out.glob("*.png"))) == 4


def test_generator_labels_only_the_configured_nodes(hierarchy, tiny_classifier):
    """``nodes``: the tag set teaches only what the per-pixel sets cannot; other classes become void."""
    from training.labels.pseudo_labels.classifier import load_classifier

    model = load_classifier(tiny_classifier)
    sample = _sample(("car", "bus", "man"))
    every = WeakLabelGenerator(
        hierarchy, model, OpenCVSaliency(), GeneratorConfig.from_dict(_settings(tiny_classifier))
    )
    nodes, _, _, labels = every.maps(sample)
    config = GeneratorConfig.from_dict({**_settings(tiny_classifier), "nodes": ["car"]})
    assert (
        config.to_dict()["nodes"] == ["car"]
        and "nodes" not in GeneratorConfig.from_dict(_settings(tiny_classifier)).to_dict()
    )
    only_car = WeakLabelGenerator(hierarchy, model, OpenCVSaliency(), config)
    same_nodes, _, _, restricted = only_car.maps(sample)
    car = nodes.index("car")
    assert same_nodes == nodes and (labels == car).any() and ((labels != car) & (labels != -1)).any()
    np.testing.assert_array_equal(restricted, np.where(labels == car, car, -1))  # the car pixels stay, the rest void
    with pytest.raises(ValueError, match="'zebra' is not a node"):
        WeakLabelGenerator(
            hierarchy,
            model,
            OpenCVSaliency(),
            GeneratorConfig.from_dict({**_settings(tiny_classifier), "nodes": ["zebra"]}),
        )
    with pytest.raises(ValueError, match="nodes: expected a list"):
        GeneratorConfig.from_dict({**_settings(tiny_classifier), "nodes": "bus"})


def test_cli_nodes_flag():
    from training.labels.pseudo_labels.__main__ import build_parser, settings_from_args

    args = build_parser().parse_args(["generate", "--data", "d", "--out", "o", "--nodes", "truck, bus,train"])
    assert settings_from_args(args)["nodes"] == ["truck", "bus", "train"]
    assert "nodes" not in settings_from_args(build_parser().parse_args(["generate", "--data", "d", "--out", "o"]))
