"""Traffic-sign scores on the held-out GTSDB test scenes, read the way the node decides and the way
training sees them (``python -m training.evaluation.signs --help``).

Decisions, two ways (:data:`DECISION_MODES`):

- ``deployed``: the runtime :class:`~hiseg_ros.engines.Engine`'s decisions, i.e. what the exported
  graph and the node output: argmax per classifier at output stride, nearest upsampling, the
  hierarchy's decision rule (``hiseg_ros.engines.torch_graph``). Works for an exported model too.
- ``training``: logits upsampled bilinearly to the input size, then argmax (the loss's view of the
  logits; :func:`hiseg_ros.model.decide` mode ``bilinear_argmax``) and the same decision rule
  (:meth:`Hierarchy.flatten`). Needs the logits, so only a training checkpoint has it.

For small signs the two differ: a sign of 16 px covers about one cell of a stride-16 map.

Scores per mode (GTSDB class ids 0..42; conventions of :mod:`training.evaluation.metrics`):

- *end to end*, image-wide: per-class IoU of the flattened leaf map, every pixel counted (root must
  say traffic sign, front/back must say front, then the class; a sign class predicted off the signs
  is a false positive). mIoU over the classes present (in the truth or the predictions);
- *end to end on true sign pixels*: the same map on the true front-sign pixels only (mIoU, pixel
  accuracy; the sign columns of ``training.jobs.experiments``);
- *given the location*: on the true front-sign pixels, the best of the 43 sign leaves by path
  log-probability (:func:`leaf_log_probabilities`) whether or not the network labels the pixel a
  sign. For a hierarchical network the shared prefix (root -> traffic sign -> front) is the same for
  all 43 leaves, so this is the sign sub-classifier's own argmax; for a flat network it is the
  root's argmax restricted to the 43 sign leaves, so the rule compares both kinds of network.
  Needs the logits (checkpoint);
- *detection*: the node's sign instances (:func:`hiseg_ros.outputs.find_signs` with the node's
  ``sign_class``, ``min_sign_area`` and ``sign_split`` from config/hiseg.yaml) matched to the true sign boxes (the
  boxes of gt.txt): precision / recall at box IoU >= 0.5 with the right class, and by location
  alone, for all signs and for signs of at least 16 px (:mod:`training.evaluation.sign_instances`);
- what the root decides on true sign pixels (also on Cityscapes ``val`` signs, deployed mode).

Test scale (``--test-scale``, default :data:`DEFAULT_TEST_SCALE` = 1.0, the native size): each
image is scaled by it before inference and the decisions are brought back to the native size, as
the node does with ``resize.policy fit`` (:func:`hiseg_ros.outputs.fit_input` /
:func:`~hiseg_ros.outputs.restore_decisions`); all scores are counted at the native size against
the native truth. The default is what the node does with its default ``resize.policy none``. The
held-out scenes' signs are smaller than the sign crops training shows, so a larger test scale
reads what the network has learnt with less of the stride-16 handicap; it is not the deployed
setting unless the node is configured so.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from hiseg_ros.atomic import atomic_write_bytes
from hiseg_ros.engines import BACKENDS, PAD_VALUE_RGB, PRECISIONS, Engine, create_engine
from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.hierarchy import IGNORE, Hierarchy
from hiseg_ros.model import decide, normalize_image
from hiseg_ros.node_params import SPEC, effective_parameters
from hiseg_ros.outputs import SIGN_SPLITS, FitTransform, find_signs, fit_input, restore_decisions, sign_leaf_lut
from training import REPO
from training.data.synthetic import Scene, gtsdb_boxed, iter_scenes
from training.evaluation.metrics import ConfusionMatrix
from training.evaluation.sign_instances import DetectionScores, SignBox
from training.evaluation.sign_report import build_report, format_report

NODE_SIGN_SPLIT: str = SPEC["sign_split"].default  # the node's default, declared once in its parameter table

__all__ = [
    "DECISION_MODES",
    "DEFAULT_TEST_SCALE",
    "NODE_CONFIG",
    "ModeResult",
    "SignEvaluation",
    "SignTables",
    "evaluate_signs",
    "leaf_log_probabilities",
    "node_sign_parameters",
    "root_on_cityscapes_signs",
    "training_decisions",
    "true_sign_boxes",
]

DECISION_MODES = ("deployed", "training")
DEFAULT_TEST_SCALE = 1.0
NODE_CONFIG = REPO / "config" / "hiseg.yaml"
CITYSCAPES_SIGN_ID = 20


def leaf_log_probabilities(hierarchy: Hierarchy, logits: Mapping[str, torch.Tensor], leaves: list[str]) -> torch.Tensor:
    """``B x len(leaves) x h x w``: log p(leaf) as the sum of the path's per-classifier log-softmax."""
    log_soft = {name: functional.log_softmax(value, dim=1) for name, value in logits.items()}
    planes = []
    for leaf in leaves:
        steps = hierarchy.path(leaf)
        planes.append(sum(log_soft[clf][:, index] for clf, index in steps))
    return torch.stack(planes, dim=1)


def training_decisions(
    hierarchy: Hierarchy, logits: Mapping[str, torch.Tensor], size: tuple[int, int]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The training view of one image's ``1 x C x h x w`` logits: bilinear upsampling to ``size``,
    argmax, the hierarchy's decision rule. Returns (per-classifier decisions, leaf map)."""
    with torch.inference_mode():
        per_classifier = {name: d[0].numpy() for name, d in decide(dict(logits), size, "bilinear_argmax").items()}
    return per_classifier, hierarchy.flatten(per_classifier)


def node_sign_parameters(path: Path = NODE_CONFIG) -> tuple[str, int, str]:
    """The node's ``sign_class``, ``min_sign_area`` and ``sign_split`` with its parameter file
    (config/hiseg.yaml), resolved as the node resolves them (declared defaults, then the file)."""
    values = effective_parameters(["--params-file", str(path)], ("sign_class", "min_sign_area", "sign_split"))
    return str(values["sign_class"]), int(values["min_sign_area"]), str(values["sign_split"])


@dataclass(frozen=True, eq=False)
class SignTables:
    """Per hierarchy: the 43 GTSDB leaves, leaf id -> GTSDB class, and the sign-instance LUT.

    ``sign_lut`` is the node's (:func:`~hiseg_ros.outputs.sign_leaf_lut` of ``sign_class``; "" = the
    classes the hierarchy declares ``traffic_sign: true``); a hierarchy without that class or
    declaration (the node would refuse to start with it) takes the GTSDB leaves instead, and
    ``sign_source`` says which.
    """

    leaves: list[str]  # GTSDB leaf names by GTSDB id
    natives: np.ndarray  # GTSDB id of each leaf of ``leaves`` (uint8)
    native_of_leaf: np.ndarray  # leaf-map value -> GTSDB id, IGNORE for other leaves (uint8)
    sign_lut: np.ndarray
    sign_source: str
    num_classes: int  # GTSDB ids 0..num_classes-1; the image-wide matrix adds "no sign" = num_classes

    @classmethod
    def of(cls, hierarchy: Hierarchy, sign_class: str) -> SignTables:
        gtsdb = hierarchy.dataset("gtsdb").ids
        natives = sorted(int(k) for k, node in gtsdb.items() if node is not None)
        leaves = [gtsdb[k] for k in natives]
        if len(set(leaves)) != len(leaves):
            raise ValueError(f"hierarchy {hierarchy.name!r}: GTSDB classes share leaves; sign classes cannot be scored")
        native_of_leaf = np.full(hierarchy.void_value + 1, IGNORE, np.uint8)
        for native, leaf in zip(natives, leaves, strict=True):
            native_of_leaf[hierarchy.node(leaf).id] = native
        try:
            lut = sign_leaf_lut(hierarchy, sign_class)
            declared = f"the leaves of the traffic_sign classes of {hierarchy.name}"
            source = f"the leaves under {sign_class}" if sign_class else declared
        except KeyError as exc:
            lut = np.zeros(max(hierarchy.max_leaf_id, hierarchy.void_value) + 1, dtype=bool)
            lut[[hierarchy.node(leaf).id for leaf in leaves]] = True
            source = f"the GTSDB leaves ({exc.args[0]})"
        return cls(leaves, np.asarray(natives, np.uint8), native_of_leaf, lut, source, max(natives) + 1)

    def image_wide(self, values: np.ndarray) -> np.ndarray:
        """GTSDB ids (or IGNORE) -> class indices of the image-wide matrix (IGNORE -> "no sign")."""
        return np.where(values == IGNORE, self.num_classes, values)


@dataclass
class ModeResult:
    """Every score of one decision mode, accumulated over images."""

    image_wide: ConfusionMatrix  # true GTSDB class or "no sign" vs the leaf map's, every pixel
    on_sign_pixels: ConfusionMatrix  # true GTSDB class vs the leaf map's class, true sign pixels only
    given_location: ConfusionMatrix | None  # true GTSDB class vs the best sign leaf; None without logits
    detection: DetectionScores = field(default_factory=DetectionScores)
    root_counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))  # root decisions on signs

    @classmethod
    def empty(cls, tables: SignTables, given_location: bool) -> ModeResult:
        n = tables.num_classes
        return cls(ConfusionMatrix(n + 1), ConfusionMatrix(n), ConfusionMatrix(n) if given_location else None)

    def add(
        self,
        tables: SignTables,
        hierarchy: Hierarchy,
        truth: np.ndarray,
        true_boxes: Sequence[SignBox],
        root: np.ndarray,
        leaf: np.ndarray,
        given: np.ndarray | None,
        min_sign_area: int,
        unboxed: Sequence[SignBox] = (),
        sign_split: str = NODE_SIGN_SPLIT,
    ) -> None:
        """One image at native size: ``truth`` GTSDB id per pixel (IGNORE off the front signs),
        ``true_boxes`` / ``unboxed`` its boxed and unboxed front signs, ``root`` / ``leaf`` the
        decisions, ``given`` the given-location GTSDB ids (or None)."""
        predicted = tables.native_of_leaf[leaf]
        self.image_wide.update(tables.image_wide(truth), tables.image_wide(predicted))
        self.on_sign_pixels.update(truth, predicted)
        self.root_counts += np.bincount(root[truth != IGNORE], minlength=256)[:256]
        if self.given_location is not None and given is not None:
            self.given_location.update(truth, given)
        found = find_signs(hierarchy, leaf, tables.sign_lut, min_sign_area, sign_split)
        detections = [SignBox.from_detection(d, tables.native_of_leaf) for d in found]
        self.detection.add(true_boxes, detections, unboxed)


@dataclass
class SignEvaluation:
    """The scores of every decision mode that could be computed, and how far the two modes differ."""

    test_scale: float
    sign_source: str
    min_sign_area: int
    sign_split: str = NODE_SIGN_SPLIT
    images: int = 0
    modes: dict[str, ModeResult | None] = field(default_factory=dict)  # None: the mode needs logits
    differing_pixels: int = 0  # pixels whose leaf differs between the modes (both modes present)
    pixels: int = 0
    differing_sign_pixels: int = 0
    sign_pixels: int = 0


@dataclass(frozen=True)
class _Scene:
    image: np.ndarray
    truth: np.ndarray  # GTSDB id per pixel, IGNORE off the front signs
    boxes: list[SignBox]  # the signs gt.txt boxes
    unboxed: list[SignBox]  # visible front signs outside gt.txt's range


def true_sign_boxes(scene: Scene) -> tuple[list[SignBox], list[SignBox]]:
    """The scene's front signs: those gt.txt boxes (the GTSDB writer's :func:`gtsdb_boxed`), and the
    other visible ones, too small for the benchmark to box (ignored by the detection scores)."""
    boxed = gtsdb_boxed(scene)
    ids = {inst.id for inst in boxed}
    unboxed = [i for i in scene.instances if i.gtsdb_class is not None and i.area > 0 and i.id not in ids]
    return [SignBox(*i.bbox, i.gtsdb_class) for i in boxed], [SignBox(*i.bbox, i.gtsdb_class) for i in unboxed]


def _gtsdb_test_scenes(data_root: Path, limit: int | None) -> Iterator[_Scene]:
    """The held-out synthetic GTSDB test scenes, re-rendered with the settings of their synthetic.json."""
    info = json.loads((data_root / "gtsdb" / "synthetic.json").read_text())["settings"]
    scenes = iter_scenes("gtsdb", info["preset"], info["seed"], info["scale"], split="test")
    for done, (_, scene) in enumerate(scenes, start=1):
        yield _Scene(scene.image, scene.sign_classes(), *true_sign_boxes(scene))
        if limit and done >= limit:
            return


def scaled_input(image: np.ndarray, test_scale: float) -> tuple[np.ndarray, FitTransform]:
    """``image`` scaled by ``test_scale`` the node's ``fit`` way (identity at 1.0)."""
    h, w = image.shape[:2]
    target = (max(1, round(h * test_scale)), max(1, round(w * test_scale)))
    return fit_input(image, target, PAD_VALUE_RGB)


def _given_location(
    hierarchy: Hierarchy, logits: Mapping[str, torch.Tensor], tables: SignTables, size: tuple[int, int], mode: str
) -> np.ndarray:
    """Index into ``tables.leaves`` of the best sign leaf per pixel at ``size``, in ``mode``."""
    with torch.inference_mode():
        if mode == "deployed":  # argmax at output stride, nearest upsampling
            scores = leaf_log_probabilities(hierarchy, logits, tables.leaves)
            scores = functional.interpolate(scores, size=size, mode="nearest")
        else:  # log-probabilities of the bilinearly upsampled logits
            path = {clf for leaf in tables.leaves for clf, _ in hierarchy.path(leaf)}
            up = {n: functional.interpolate(logits[n], size=size, mode="bilinear", align_corners=False) for n in path}
            scores = leaf_log_probabilities(hierarchy, up, tables.leaves)
    return scores[0].argmax(0).numpy()


def evaluate_signs(
    engine: Engine,
    data_root: Path,
    limit: int | None,
    *,
    test_scale: float = DEFAULT_TEST_SCALE,
    modes: Sequence[str] = DECISION_MODES,
    sign_class: str | None = None,
    min_sign_area: int | None = None,
    sign_split: str | None = None,
) -> SignEvaluation:
    """All scores of the decision modes ``modes`` in one pass over the first ``limit`` GTSDB test scenes.

    ``sign_class`` / ``min_sign_area`` / ``sign_split`` default to the node's (:func:`node_sign_parameters`). The
    ``training`` mode and the given-location scores need the logits, i.e. a :class:`TorchEngine`
    (a checkpoint); for another engine they are None (``modes["training"]``, ``given_location``).
    """
    unknown = [m for m in modes if m not in DECISION_MODES]
    if unknown:
        raise ValueError(f"unknown decision modes {unknown}; expected any of {DECISION_MODES}")
    defaults = node_sign_parameters() if None in (sign_class, min_sign_area, sign_split) else None
    sign_class = sign_class if sign_class is not None else defaults[0]
    min_sign_area = min_sign_area if min_sign_area is not None else defaults[1]
    sign_split = sign_split if sign_split is not None else defaults[2]
    hierarchy = engine.hierarchy
    tables = SignTables.of(hierarchy, sign_class)
    net = engine.checkpoint.net if isinstance(engine, TorchEngine) else None
    result = SignEvaluation(test_scale, tables.sign_source, min_sign_area, sign_split)
    with_logits = net is not None
    result.modes = {m: ModeResult.empty(tables, with_logits) if m == "deployed" or with_logits else None for m in modes}
    for scene in _gtsdb_test_scenes(data_root, limit):
        result.images += 1
        net_in, fit = scaled_input(scene.image, test_scale)
        size = (net_in.shape[0], net_in.shape[1])
        logits = None
        if with_logits:
            with torch.inference_mode():
                logits = net(torch.from_numpy(normalize_image(net_in)))
        leaves = {}
        for mode, scores in result.modes.items():
            if scores is None:
                continue
            if mode == "deployed":
                decisions = engine.infer(net_in)
                per_classifier, leaf = decisions.per_classifier, decisions.leaf
            else:
                per_classifier, leaf = training_decisions(hierarchy, logits, size)
            given = None
            if logits is not None:
                picked = {"given": _given_location(hierarchy, logits, tables, size, mode)}
                given = tables.natives[restore_decisions(picked, leaf, fit)[0]["given"]]
            per_classifier, leaf = restore_decisions(per_classifier, leaf, fit)
            root = per_classifier["root"]
            scores.add(
                tables, hierarchy, scene.truth, scene.boxes, root, leaf, given, min_sign_area, scene.unboxed, sign_split
            )
            leaves[mode] = leaf
        if len(leaves) == 2:
            differ = leaves["deployed"] != leaves["training"]
            on_sign = scene.truth != IGNORE
            result.differing_pixels += int(differ.sum())
            result.pixels += differ.size
            result.differing_sign_pixels += int(differ[on_sign].sum())
            result.sign_pixels += int(on_sign.sum())
    return result


def root_on_cityscapes_signs(
    engine: Engine,
    data_root: Path,
    limit: int | None,
    test_scale: float = DEFAULT_TEST_SCALE,
    sign_id: int = CITYSCAPES_SIGN_ID,
) -> np.ndarray:
    """How often the root decided each class on Cityscapes ``val`` traffic-sign pixels (label id 20),
    deployed decisions at ``test_scale`` brought back to the native size."""
    from training.data.readers import load_dataset

    counts = np.zeros(256, np.int64)
    reader = load_dataset("cityscapes", data_root / "cityscapes", split="val")
    for i in range(min(limit or len(reader), len(reader))):
        sample = reader[i]
        on_sign = sample.label == sign_id
        if on_sign.any():
            net_in, fit = scaled_input(sample.image, test_scale)
            decisions = engine.infer(net_in)
            per_classifier, _ = restore_decisions(decisions.per_classifier, decisions.leaf, fit)
            counts += np.bincount(per_classifier["root"][on_sign], minlength=256)[:256]
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluation.signs", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, metavar="CKPT_OR_MODEL", help="training checkpoint (.pt) or exported model")
    ap.add_argument("--data", type=Path, default=Path("data/synthetic"), help="synthetic data root")
    ap.add_argument("--limit", type=int, default=40, help="at most N images per source (default 40)")
    ap.add_argument(
        "--test-scale",
        type=float,
        default=DEFAULT_TEST_SCALE,
        help=f"scale the images by this before inference, as the node's resize.policy fit does (default "
        f"{DEFAULT_TEST_SCALE}: native size, the node's default); scores are counted at native size",
    )
    ap.add_argument("--backend", choices=BACKENDS, default="auto", help="inference engine, as the node's backend")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32", help="TensorRT precision")
    node = f"default: the node's, {NODE_CONFIG.relative_to(REPO)}"
    ap.add_argument("--sign-class", help=f"class whose leaves are signs ({node})")
    ap.add_argument("--min-sign-area", type=int, help=f"smallest sign region in pixels ({node})")
    ap.add_argument("--sign-split", choices=SIGN_SPLITS, help=f"how sign pixels become instances ({node})")
    ap.add_argument("--json", type=Path, help="also write every score to this JSON file (atomically)")
    args = ap.parse_args(argv)
    if not args.test_scale > 0:
        ap.error(f"--test-scale must be positive, got {args.test_scale}")
    engine, reason = create_engine(args.model, backend=args.backend, precision=args.precision)
    signs = evaluate_signs(
        engine,
        args.data,
        args.limit,
        test_scale=args.test_scale,
        sign_class=args.sign_class,
        min_sign_area=args.min_sign_area,
        sign_split=args.sign_split,
    )
    cityscapes = root_on_cityscapes_signs(engine, args.data, args.limit, args.test_scale)
    report = build_report(
        signs,
        engine.hierarchy.classifier("root").classes,
        cityscapes,
        {"model": str(args.model), "engine": f"{engine.name} ({reason})", "hierarchy": engine.hierarchy.name,
         "data": str(args.data), "limit": args.limit, "default_test_scale": DEFAULT_TEST_SCALE},
    )  # fmt: skip
    for line in format_report(report):
        print(line)
    if args.json is not None:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
        print(f"scores written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
