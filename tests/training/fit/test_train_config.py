"""Training config: the shipped configs load, and every kind of mistake is a ConfigError naming file and key."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml
from dataset_files import make_vistas
from tiny_training import HIERARCHIES, make_tiny_data, tiny_config, write_config

from training import REPO
from training.fit.config import ConfigError, load_config

CONFIGS = REPO / "config" / "training"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("cfg_data"))


def _error(tmp_path: Path, raw: dict, name: str = "cfg.yaml", check_data: bool = True) -> str:
    path = write_config(tmp_path / name, raw)
    with pytest.raises(ConfigError) as info:
        load_config(path, check_data=check_data)
    return str(info.value)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_parse(name: str) -> None:
    config, hierarchy = load_config(CONFIGS / name, check_data=False)
    assert Path(config.hierarchy).is_file()
    assert {d.name for d in config.datasets} <= set(hierarchy.datasets)
    assert config.optimizer.momentum == 0.9 and config.schedule.poly_power > 0


def test_default_config_is_the_papers_recipe_with_a_strong_sign_head() -> None:
    config, hierarchy = load_config(CONFIGS / "default.yaml", check_data=False)
    assert [(d.name, d.per_batch) for d in config.datasets] == [
        ("cityscapes", 1),
        ("vistas", 1),
        ("gtsdb", 2),  # box data: 2 of 5 images
        ("openscapes", 1),
    ]
    assert config.augment.crop == (256, 512) and config.model.backbone == "mobilenet_v2"
    assert config.optimizer.lr == 0.01 and config.optimizer.sub_weight_decay == 1.7e-4
    assert config.loss.weights["root"] == 1.0
    # the paper's 0.1 except the 43-class sign head, whose loss reaches the trunk with the default cap
    weights = {n: config.loss.weights[n] for n in hierarchy.classifier_names[1:]}
    assert weights == {"drivable": 0.1, "rider": 0.1, "traffic_sign": 0.1, "traffic_sign_front": 1.0}
    assert config.loss.trunk_weights == {}
    flat, flat_h = load_config(CONFIGS / "flat_baseline.yaml", check_data=False)
    assert flat_h.classifier_names == ("root",) and flat.model.to_dict() == config.model.to_dict()


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and not prefix:  # sections; tables (loss.weights, ...) compare whole
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_shipped_variants_differ_from_default_only_where_they_say() -> None:
    default = _leaves(load_config(CONFIGS / "default.yaml", check_data=False)[0].to_dict())
    demo_datasets = copy.deepcopy(default["datasets"])
    assert demo_datasets[2]["name"] == "gtsdb"
    demo_datasets[2]["crops"]["tiles"] = [3, 6]  # the demo's only dataset change: denser sign mosaics
    expected = {
        "demo.yaml": {
            "datasets": demo_datasets,
            "model.decoder": "deconv_skip",
            "augment.base_height": 256,
            "augment.scale": [0.75, 1.5],
            "loss.class_weights": {
                "root": {
                    **dict.fromkeys(["wall", "fence", "pole", "traffic-light", "person", "rider"], 8),
                    **{"traffic-sign": 3, "bicycle": 8, "motorcycle": 8},
                }
            },
            "loss.trunk_weights": {"traffic_sign_front": 1.0},
            "optimizer.head_lr": {"traffic_sign_front": 5},
            "schedule.iterations": 400,
            "run.out_dir": "runs/demo/train",
            "run.num_workers": 1,
            "run.device": "cpu",
            "checkpoint.every": 50,
            "checkpoint.keep": 2,
        },
        "flat_baseline.yaml": {
            "hierarchy": str(REPO / "config" / "hierarchies" / "iv2018_flat.yaml"),
            "loss.weights": {"root": 1.0},  # the base's table replaced whole, not merged
            "run.out_dir": "runs/flat_baseline",
        },
    }
    for name, differences in expected.items():
        assert yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))["base"] == "default.yaml"
        variant = _leaves(load_config(CONFIGS / name, check_data=False)[0].to_dict())
        assert variant.keys() == default.keys()
        assert {k: v for k, v in variant.items() if v != default[k]} == differences, name


def _write(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def test_base_chain_merges_sections_and_resolves_paths_per_file(data_root: Path, tmp_path: Path) -> None:
    raw = tiny_config(data_root, tmp_path / "o")
    shutil.copy(HIERARCHIES / "iv2018.yaml", tmp_path / "h.yaml")
    raw.update(hierarchy="../h.yaml", data_root=None, optimizer={"lr": 0.01, "momentum": 0.8})
    for d in raw["datasets"]:
        d["root"] = str(Path("..") / "data" / d["root"])
    shutil.copytree(data_root, tmp_path / "data")
    _write(tmp_path / "base" / "base.yaml", raw)
    _write(
        tmp_path / "variants" / "child.yaml",
        {"base": "../base/base.yaml", "optimizer": {"lr": 0.02}, "loss": {"weights": {"root": 1.0}}},
    )
    grandchild = _write(tmp_path / "variants" / "grandchild.yaml", {"base": "child.yaml", "run": {"seed": 9}})
    config, _ = load_config(grandchild)  # opens the datasets: their roots resolved against base/
    assert config.source == str(grandchild)
    assert config.hierarchy == str(tmp_path / "h.yaml")
    assert config.datasets[0].root == str(tmp_path / "data" / "cityscapes")
    assert (config.optimizer.lr, config.optimizer.momentum) == (0.02, 0.8)
    assert config.loss.weights == {"root": 1.0}
    assert (config.run.seed, config.run.out_dir, config.run.num_workers) == (9, str(tmp_path / "o"), 0)
    assert config.augment.crop == (64, 128)


def test_base_errors_name_the_file_and_key(data_root: Path, tmp_path: Path) -> None:
    def error(path: Path) -> str:
        with pytest.raises(ConfigError) as info:
            load_config(path, check_data=False)
        return str(info.value)

    child = _write(tmp_path / "child.yaml", {"base": "nowhere.yaml"})
    assert re.match(rf"{re.escape(str(child))}: base: no such file .*nowhere\.yaml", error(child))
    _write(tmp_path / "a.yaml", {"base": "b.yaml"})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    assert re.match(
        r".*b\.yaml: base: 'a\.yaml' makes a cycle of bases \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\)",
        error(tmp_path / "a.yaml"),
    )
    _write(tmp_path / "self.yaml", {"base": "self.yaml"})
    assert "self.yaml: base: 'self.yaml' makes a cycle" in error(tmp_path / "self.yaml")
    _write(tmp_path / "list.yaml", {"base": ["a.yaml"]})
    assert re.match(r".*list\.yaml: base: expected the path of the base config", error(tmp_path / "list.yaml"))
    (tmp_path / "broken.yaml").write_text("hierarchy: [unclosed\n", encoding="utf-8")
    _write(tmp_path / "on_broken.yaml", {"base": "broken.yaml"})
    assert re.match(r".*broken\.yaml: invalid YAML", error(tmp_path / "on_broken.yaml"))

    # an error in an inherited key names the file that wrote it; one in the variant names the variant
    raw = tiny_config(data_root, tmp_path / "o")
    raw["model"]["backbone"] = "vgg16"
    raw["optimizer"]["momentun"] = 0.9
    base = _write(tmp_path / "bad_base.yaml", raw)
    variant = _write(tmp_path / "variant.yaml", {"base": "bad_base.yaml", "optimizer": {"lr": 0.02}})
    message = error(variant)
    assert message.startswith(f"{base}: optimizer.momentun: unknown key") and message.endswith(
        f"(inherited by {variant})"
    )
    _write(variant, {"base": "bad_base.yaml", "optimizer": {"momentun": 0.9}})
    assert error(variant).startswith(f"{variant}: optimizer.momentun: unknown key (expected one of lr, momentum,")
    del raw["optimizer"]["momentun"]
    _write(base, raw)
    _write(variant, {"base": "bad_base.yaml", "optimizer": {"lr": "fast"}})
    assert error(variant) == f"{variant}: optimizer.lr: expected a number, got 'fast'"
    _write(variant, {"base": "bad_base.yaml", "model": {"output_stride": 16}})
    message = error(variant)
    assert message.startswith(f"{base}: model.backbone: unknown backbone 'vgg16'") and "inherited by" in message
    _write(variant, {"base": "bad_base.yaml", "model": {"output_stride": 7, "backbone": "mobilenet_v2"}})
    assert error(variant) == f"{variant}: model.output_stride: expected 8, 16 or 32, got 7"


def test_valid_tiny_config_loads_with_data(data_root: Path, tmp_path: Path) -> None:
    config, hierarchy = load_config(write_config(tmp_path / "ok.yaml", tiny_config(data_root, tmp_path / "o")))
    assert config.augment.crop == (64, 128)
    assert config.dataset_root(config.datasets[0]) == data_root / "cityscapes"
    assert hierarchy.name == "iv2018"


@pytest.mark.parametrize(
    ("patch", "pattern"),
    [
        ({"optimiser": {"lr": 0.1}}, r"cfg\.yaml: optimiser: unknown key"),
        ({"optimizer": {"lr": 0.01, "momentun": 0.9}}, r"cfg\.yaml: optimizer\.momentun: unknown key"),
        ({"optimizer": {"lr": "fast"}}, r"cfg\.yaml: optimizer\.lr: expected a number, got 'fast'"),
        ({"schedule": {"iterations": 2.5}}, r"cfg\.yaml: schedule\.iterations: expected an integer"),
        ({"run": {"amp": "yes"}}, r"cfg\.yaml: run\.amp: expected true/false"),
        ({"augment": {"crop": [64]}}, r"cfg\.yaml: augment\.crop: expected a list of 2"),
        ({"augment": {"crop": [0, 64]}}, r"cfg\.yaml: augment\.crop: expected \[height, width\] > 0"),
        ({"augment": {"brightness": 1.5}}, r"cfg\.yaml: augment\.brightness: expected a fraction in \[0, 1\)"),
        ({"pseudo_labels": {"box_mode": "soft"}}, r"cfg\.yaml: pseudo_labels\.box_mode: expected one of \['fill', "),
        ({"pseudo_labels": {"min_mass": 0}}, r"cfg\.yaml: pseudo_labels\.min_mass: expected a number in \(0, 1\]"),
        (
            {"pseudo_labels": {"min_mas": 0.1}},
            r"cfg\.yaml: pseudo_labels\.min_mas: unknown key \(expected one of box_mode, min_mass, supervise_root, "
            r"box_core, tag_classifiers, precomputed\)$",
        ),
        (
            {"pseudo_labels": {"tag_classifiers": "some"}},
            r"cfg\.yaml: pseudo_labels\.tag_classifiers: expected one of \['all', 'untaught'\] or a list of classifier",
        ),
        (
            {"pseudo_labels": {"tag_classifiers": [3]}},
            r"cfg\.yaml: pseudo_labels\.tag_classifiers: expected a string or a list of strings",
        ),
        (
            {"pseudo_labels": {"tag_classifiers": ["nosuch"]}},
            r"cfg\.yaml: pseudo_labels\.tag_classifiers: \['nosuch'\] not classifiers of",
        ),
        ({"pseudo_labels": {"box_core": 1}}, r"cfg\.yaml: pseudo_labels\.box_core: expected a number in \[0, 1\)"),
        ({"model": {"backbone": "vgg16"}}, r"cfg\.yaml: model\.backbone: unknown backbone 'vgg16'"),
        ({"loss": {"weights": {"traffic_sgn": 0.1}}}, r"cfg\.yaml: loss\.weights\.traffic_sgn: unknown classifier"),
        ({"loss": {"weights": {"road": 0.1}}}, r"cfg\.yaml: loss\.weights\.road: class 'road' .* owns no classifier"),
        ({"loss": {"weights": {"rider": -1}}}, r"cfg\.yaml: loss\.weights\.rider: expected a number >= 0"),
        ({"checkpoint": {"every": 0}}, r"cfg\.yaml: checkpoint\.every: expected > 0"),
        ({"hierarchy": "nowhere.yaml"}, r"cfg\.yaml: hierarchy: cannot load"),
        ({"datasets": []}, r"cfg\.yaml: datasets: expected a non-empty list"),
    ],
)
def test_bad_values_name_file_and_key(data_root: Path, tmp_path: Path, patch: dict, pattern: str) -> None:
    raw = tiny_config(data_root, tmp_path / "o")
    raw.update(patch)
    assert re.search(pattern, _error(tmp_path, raw, check_data=False)), _error(tmp_path, raw, check_data=False)


def test_unknown_dataset_and_dataset_keys(data_root: Path, tmp_path: Path) -> None:
    raw = tiny_config(data_root, tmp_path / "o")
    raw["datasets"][1]["name"] = "kitti"
    assert re.search(r"datasets\[1\]\.name: unknown dataset 'kitti'", _error(tmp_path, raw, check_data=False))
    raw = tiny_config(data_root, tmp_path / "o")
    raw["datasets"][0]["per_bach"] = 2
    assert re.search(r"datasets\[0\]\.per_bach: unknown key", _error(tmp_path, raw, check_data=False))
    raw = tiny_config(data_root, tmp_path / "o")
    raw["datasets"][0]["options"] = {"spilt": "train"}
    assert re.search(r"datasets\[0\]\.options: .*spilt", _error(tmp_path, raw))
    raw = tiny_config(data_root, tmp_path / "o")
    raw["datasets"][2]["root"] = "no_such_dir"
    assert re.search(r"datasets\[2\] \(gtsdb at .*no_such_dir\)", _error(tmp_path, raw))
    raw = tiny_config(data_root, tmp_path / "o")
    raw["datasets"].append(dict(raw["datasets"][0]))
    assert re.search(r"datasets\[4\]\.name: dataset 'cityscapes' listed twice", _error(tmp_path, raw, check_data=False))


def test_dataset_not_mapped_by_the_hierarchy(data_root: Path, tmp_path: Path) -> None:
    hierarchy = yaml.safe_load((HIERARCHIES / "iv2018.yaml").read_text(encoding="utf-8"))
    del hierarchy["datasets"]["openscapes"]
    (tmp_path / "no_tags.yaml").write_text(yaml.safe_dump(hierarchy, sort_keys=False), encoding="utf-8")
    raw = tiny_config(data_root, tmp_path / "o", hierarchy=str(tmp_path / "no_tags.yaml"))
    message = _error(tmp_path, raw, check_data=False)
    assert re.search(r"cfg\.yaml: datasets\[3\]\.name: dataset 'openscapes' has no label mapping", message)


def test_dataset_labels_that_do_not_fit_the_hierarchy(data_root: Path, tmp_path: Path) -> None:
    # Vistas v2.0 (124 labels) against the v1.2 mapping of iv2018
    make_vistas(tmp_path / "vistas20", "training", ["k1"], version="v2.0", num_labels=124)
    raw = tiny_config(data_root, tmp_path / "o")
    raw["datasets"][1] = {"name": "vistas", "root": str(tmp_path / "vistas20"), "options": {"split": "training"}}
    message = _error(tmp_path, raw)
    assert re.search(r"cfg\.yaml: datasets\[1\]: labels of dataset 'vistas' do not fit hierarchy 'iv2018'", message)
    assert "66" in message  # the first unmapped id
    # a tag vocabulary with tags the hierarchy does not map
    raw = tiny_config(data_root, tmp_path / "o")
    raw["datasets"][3]["options"] = {"vocabulary": ["car", "unicorn"]}
    assert re.search(r"native tags 'unicorn' are not mapped", _error(tmp_path, raw))


def test_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("hierarchy: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping at the top level"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")
