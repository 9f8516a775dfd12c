"""What the node publishes, computed from one frame's decisions: pure numpy / OpenCV, no ROS.

The node calls these functions and only wraps the results in messages, so everything here is
tested without DDS:

- :func:`fit_input` / :func:`restore_decisions` / :func:`restore_plane`: the ``fit`` resize policy
  (scale to a target size keeping the aspect ratio, pad right / bottom) and its inverse on the
  decisions (crop the padding, nearest-neighbour back to input resolution; or, for the node's
  ``output.resolution network``, crop only, leaving the masks at the size the network saw);
- :func:`classifier_masks`: per classifier, its class index where the pixel's path goes through it,
  :data:`~hiseg_ros.hierarchy.IGNORE` (255) elsewhere;
- :func:`colorize`: leaf map -> RGB through the hierarchy's palette (one LUT lookup);
  :func:`colorize_classifier`: one classifier's mask -> RGB (each class in its colour, black
  outside the classifier's parent class), what RViz can show where a mono8 index image looks black;
- :func:`find_signs`: traffic-sign instances, i.e. 8-connected regions of pixels whose leaf lies under
  the traffic-sign classes (declared in the hierarchy: ``traffic-sign-front`` in iv2018) and, by
  default (:data:`SIGN_SPLITS` ``leaf``), is the same leaf: signs of different classes that touch
  (a post with two signs, a sign stack) are separate instances; ``region`` keeps a touching group
  as one, class = majority leaf inside the region; score = the instance's share of its region (``region``:
  the majority leaf's), so a low score marks a fragment;
- :func:`overlay`: the input blended with the colour mask, sign boxes and class names drawn;
- :func:`confidence_mono8`: the per-pixel confidence (0..1 float) as 0..255 bytes;
- :func:`render`: one frame's wanted outputs (:data:`OUTPUTS`) from its decisions, each computed
  only when wanted: the node's ``_process`` and the offline bag evaluation both call it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .hierarchy import Hierarchy
from .label_remap import LabelRemap

__all__ = [
    "OUTPUTS",
    "SIGN_SPLITS",
    "FitTransform",
    "FrameOutputs",
    "SignDetection",
    "classifier_masks",
    "classifier_palette",
    "colorize",
    "colorize_classifier",
    "confidence_mono8",
    "find_signs",
    "fit_input",
    "overlay",
    "render",
    "restore_decisions",
    "restore_plane",
    "sign_leaf_lut",
]

#: The output kinds (the node's ``outputs`` parameter): ``masks`` = every ``~/<classifier>/mask``,
#: ``mask`` = the leaf map, ``colored``, ``overlay``, ``traffic_signs`` (sign instances).
OUTPUTS = ("masks", "mask", "colored", "overlay", "traffic_signs")
SIGN_SPLITS = ("leaf", "region")  # how find_signs cuts sign pixels into instances


@dataclass(frozen=True)
class FitTransform:
    """How an input of ``in_size`` was placed into the network input (``out_size``)."""

    in_size: tuple[int, int]  # (height, width) of the camera image
    scaled_size: tuple[int, int]  # (height, width) of the image content in the network input
    out_size: tuple[int, int]  # (height, width) of the network input (content + padding)

    @property
    def identity(self) -> bool:
        return self.in_size == self.scaled_size == self.out_size


def fit_input(
    rgb: np.ndarray, target_hw: tuple[int, int] | None, pad_value: tuple[int, int, int] = (0, 0, 0)
) -> tuple[np.ndarray, FitTransform]:
    """Scale ``rgb`` to fit ``target_hw = (height, width)`` keeping its aspect ratio, pad right/bottom.

    ``target_hw=None`` (resize policy ``none``) returns the image untouched. Padding has colour
    ``pad_value`` (the node uses the engines' ``PAD_VALUE_RGB``, ~0 after normalisation).
    """
    h, w = rgb.shape[:2]
    if target_hw is None or (h, w) == tuple(target_hw):
        return rgb, FitTransform((h, w), (h, w), (h, w))
    th, tw = int(target_hw[0]), int(target_hw[1])
    if th <= 0 or tw <= 0:
        raise ValueError(f"fit_input: target size must be positive, got {th}x{tw} (height x width)")
    scale = min(th / h, tw / w)
    sh, sw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    scaled = cv2.resize(np.ascontiguousarray(rgb), (sw, sh), interpolation=interp)
    if (sh, sw) == (th, tw):
        return scaled, FitTransform((h, w), (sh, sw), (th, tw))
    padded = np.empty((th, tw, 3), dtype=np.uint8)
    padded[:] = np.asarray(pad_value, dtype=np.uint8)
    padded[:sh, :sw] = scaled
    return padded, FitTransform((h, w), (sh, sw), (th, tw))


def restore_plane(plane: np.ndarray, fit: FitTransform, to_input: bool = True) -> np.ndarray:
    """Undo :func:`fit_input` on one ``H x W`` plane (decisions, leaf map, confidence).

    The padding is cropped; ``to_input`` then scales the content back to the input size (nearest
    neighbour: class indices stay class indices). ``to_input=False`` leaves it at network scale.
    """
    if fit.identity:
        return plane
    sh, sw = fit.scaled_size
    h, w = fit.in_size
    cropped = np.ascontiguousarray(plane[:sh, :sw])
    if not to_input or (sh, sw) == (h, w):
        return cropped
    return cv2.resize(cropped, (w, h), interpolation=cv2.INTER_NEAREST)


def restore_decisions(
    per_classifier: Mapping[str, np.ndarray], leaf: np.ndarray, fit: FitTransform, to_input: bool = True
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`restore_plane` on every decision map and the leaf map."""
    if fit.identity:
        return dict(per_classifier), leaf
    restored = {k: restore_plane(v, fit, to_input) for k, v in per_classifier.items()}
    return restored, restore_plane(leaf, fit, to_input)


def confidence_mono8(confidence: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] (float) -> uint8 ``round(255 * p)``: 255 = certain, 0 = impossible."""
    scaled = cv2.multiply(np.ascontiguousarray(confidence, dtype=np.float32), 255.0)
    return cv2.convertScaleAbs(scaled)  # rounds and saturates to 0..255


def classifier_masks(
    hierarchy: Hierarchy, per_classifier: Mapping[str, np.ndarray], leaf: np.ndarray
) -> dict[str, np.ndarray]:
    """Per classifier: uint8 class indices, 255 where the pixel's path does not go through it.

    :meth:`Hierarchy.classifier_masks` with the LUT lookup in cv2 for uint8 leaf maps (every
    hierarchy with fewer than 255 leaves; its LUTs then have the 256 entries cv2.LUT wants), which
    is faster than numpy indexing at camera resolution; this runs on every frame with a
    ``~/<classifier>/mask`` subscriber (cost: docs/BENCHMARKS.md, node section).
    """
    lookup = _cv2_lookup if leaf.dtype == np.uint8 else np.take
    return hierarchy.classifier_masks(per_classifier, leaf, lookup)


def _cv2_lookup(lut: np.ndarray, leaf: np.ndarray) -> np.ndarray:
    return cv2.LUT(np.ascontiguousarray(leaf), lut)


def colorize(hierarchy: Hierarchy, leaf: np.ndarray) -> np.ndarray:
    """Leaf map (uint8 / uint16 leaf ids) -> ``HxWx3`` uint8 RGB via the hierarchy's palette.

    uint8 maps go through cv2.LUT (about 9x faster than numpy fancy indexing at 512x1024: this
    runs on every frame with a ~colored / ~overlay subscriber).
    """
    if leaf.dtype == np.uint8:
        return cv2.LUT(cv2.merge([leaf, leaf, leaf]), hierarchy.palette[:256].reshape(256, 1, 3))
    return hierarchy.palette[leaf]


def classifier_palette(hierarchy: Hierarchy, classifier: str) -> np.ndarray:
    """256 x 3 LUT class index -> RGB of one classifier: its classes' colours, black elsewhere (255)."""
    clf = hierarchy.classifier(classifier)
    lut = np.zeros((256, 3), dtype=np.uint8)
    for index, name in enumerate(clf.classes):
        lut[index] = hierarchy.node(name).color
    return lut


def colorize_classifier(hierarchy: Hierarchy, classifier: str, mask: np.ndarray) -> np.ndarray:
    """A classifier's mask (from :func:`classifier_masks`) as RGB through :func:`classifier_palette`."""
    lut = classifier_palette(hierarchy, classifier)
    return cv2.LUT(cv2.merge([mask, mask, mask]), lut.reshape(256, 1, 3))


def sign_leaf_lut(hierarchy: Hierarchy, sign_class: str = "") -> np.ndarray:
    """Boolean LUT over leaf-map values: True for the leaves under (or equal to) ``sign_class``.

    ``sign_class`` "" takes the hierarchy's own declaration (``traffic_sign: true`` classes,
    :attr:`Hierarchy.traffic_sign_leaves`). Raises ``KeyError`` naming the hierarchy when
    ``sign_class`` is not one of its classes, or is "" and the hierarchy declares none.
    """
    lut = np.zeros(max(hierarchy.max_leaf_id, hierarchy.void_value) + 1, dtype=bool)
    if not sign_class:
        if not hierarchy.traffic_sign_classes:
            raise KeyError(f"hierarchy {hierarchy.name!r} declares no traffic_sign class")
        lut[[leaf.id for leaf in hierarchy.traffic_sign_leaves]] = True
        return lut
    node = hierarchy.node(sign_class)
    if node.classifier is None:
        lut[node.id] = True
    else:
        for leaf in hierarchy.descendant_leaves(sign_class):
            lut[leaf.id] = True
    return lut


@dataclass(frozen=True)
class SignDetection:
    """One traffic-sign instance, in pixel coordinates of the input image."""

    x: int  # left column
    y: int  # top row
    width: int
    height: int
    area: int  # pixels in the region
    leaf_id: int  # its leaf (split "region": the majority leaf of the region)
    class_name: str  # that leaf's name (also the Detection2D class_id the node publishes)
    score: float  # the instance's share of its sign region (split "region": the majority leaf's)

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) centre of the box, the vision_msgs BoundingBox2D convention."""
        return self.x + self.width / 2.0, self.y + self.height / 2.0


def _sign_pixels(sign_lut: np.ndarray, leaf: np.ndarray) -> np.ndarray:
    """``sign_lut[leaf]``; through cv2.LUT for uint8 maps (15x faster than numpy indexing at 512x1024)."""
    if leaf.dtype == np.uint8 and sign_lut.shape == (256,):
        return cv2.LUT(np.ascontiguousarray(leaf), sign_lut.view(np.uint8)).view(bool)
    return sign_lut[leaf]


def find_signs(
    hierarchy: Hierarchy,
    leaf: np.ndarray,
    sign_lut: np.ndarray,
    min_area: int = 1,
    split: str = "leaf",
) -> list[SignDetection]:
    """Traffic-sign instances in a leaf map: 8-connected regions of sign pixels of at least ``min_area``.

    ``sign_lut`` comes from :func:`sign_leaf_lut`. ``split`` (:data:`SIGN_SPLITS`): ``leaf`` makes
    a region of one leaf (sign class) an instance, ``region`` a region of any sign leaves (class =
    its majority leaf); ``score`` is the instance's share of its region (``region``: the majority
    leaf's share), so a fragment of a region scores low. Why ``leaf`` is the default: a semantic map
    has no instance boundaries, and at output stride 8 signs a few pixels apart on one post merge
    into one region whose box matches none of them; where the classes differ, the class boundary is
    the instance boundary. ``region`` suits a model whose sign sub-classifier is too noisy to split
    by (one sign would break into several). Detections are sorted by area, largest first.
    """
    if split not in SIGN_SPLITS:
        raise ValueError(f"find_signs: unknown split {split!r}; expected one of {', '.join(SIGN_SPLITS)}")
    sign = _sign_pixels(sign_lut, leaf)
    rows = np.flatnonzero(sign.any(axis=1))
    if rows.size == 0:
        return []
    # Components are searched in the box around all sign pixels only (signs are small: usually a
    # few per cent of the frame), then shifted back: the same regions, a fraction of the work.
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(sign[y0:y1].any(axis=0))
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    sign, leaf = np.ascontiguousarray(sign[y0:y1, x0:x1]), leaf[y0:y1, x0:x1]
    names = {c.id: c.name for c in hierarchy.leaves}
    out = []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(sign.view(np.uint8), connectivity=8)
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        inside = labels[y : y + h, x : x + w] == label
        box = leaf[y : y + h, x : x + w]
        ids, counts = np.unique(box[inside], return_counts=True)
        if split == "region" or len(ids) == 1:
            best = int(np.argmax(counts))
            leaf_id = int(ids[best])
            score = float(counts[best]) / area
            out.append(SignDetection(x0 + x, y0 + y, w, h, area, leaf_id, names.get(leaf_id, str(leaf_id)), score))
            continue
        for leaf_id in (int(v) for v in ids):  # the region's parts of one leaf each, in its box only
            part = (inside & (box == leaf_id)).view(np.uint8)
            n, _, part_stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
            name = names.get(leaf_id, str(leaf_id))
            for px, py, pw, ph, part_area in (tuple(int(v) for v in row) for row in part_stats[1:n]):
                if part_area >= min_area:
                    out.append(
                        SignDetection(x0 + x + px, y0 + y + py, pw, ph, part_area, leaf_id, name, part_area / area)
                    )
    out.sort(key=lambda d: (-d.area, d.y, d.x))
    return out


def _text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def overlay(
    rgb: np.ndarray,
    colored: np.ndarray,
    alpha: float,
    signs: list[SignDetection] | tuple[SignDetection, ...] = (),
    palette: np.ndarray | Any = None,
) -> np.ndarray:
    """``rgb`` blended with ``colored`` (weight ``alpha``), sign boxes and class names drawn on top.

    Boxes take the sign leaf's palette colour when ``palette`` is given (else yellow). Returns a new
    contiguous ``HxWx3`` uint8 image; the inputs are not modified.
    """
    if rgb.shape != colored.shape:
        raise ValueError(f"overlay: image {rgb.shape} and colour mask {colored.shape} differ in shape")
    alpha = float(alpha)
    if alpha <= 0.0:
        out = np.array(rgb, order="C", copy=True)
    elif alpha >= 1.0:
        out = np.array(colored, order="C", copy=True)
    else:
        out = cv2.addWeighted(np.ascontiguousarray(rgb), 1.0 - alpha, np.ascontiguousarray(colored), alpha, 0.0)
    h = out.shape[0]
    scale = max(0.3, min(1.0, h / 720.0))
    thickness = 1 if h < 720 else 2
    for det in signs:
        color = (255, 255, 0)
        if palette is not None and det.leaf_id < len(palette):
            color = tuple(int(c) for c in palette[det.leaf_id])
        x0, y0, x1, y1 = det.x, det.y, det.x + det.width - 1, det.y + det.height - 1
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thickness)
        label = f"{det.class_name} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else min(h - 1, y1 + th + 2)
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw, ty + base // 2), color, cv2.FILLED)
        cv2.putText(out, label, (x0, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, _text_color(color), thickness)
    return out


@dataclass(frozen=True)
class FrameOutputs:
    """One frame's outputs at input resolution; None where the output was not wanted.

    ``signs`` is computed for ``traffic_signs`` and for ``overlay`` (which draws them); it is empty
    when sign detection is off (no sign LUT).
    """

    masks: dict[str, np.ndarray] | None = None  # classifier -> uint8 class indices, 255 outside its parent
    classifier_colored: dict[str, np.ndarray] | None = None  # classifier -> RGB of its mask
    leaf: np.ndarray | None = None
    colored: np.ndarray | None = None
    overlay: np.ndarray | None = None
    signs: list[SignDetection] | None = None
    remapped: np.ndarray | None = None  # the leaf map in a label remap table's label space (uint8)


def render(
    hierarchy: Hierarchy,
    per_classifier: Mapping[str, np.ndarray],
    leaf: np.ndarray,
    image: np.ndarray,
    wanted: Collection[str],
    *,
    sign_lut: np.ndarray | None = None,
    min_sign_area: int = 1,
    sign_split: str = "leaf",
    overlay_alpha: float = 0.5,
    colored_classifiers: Collection[str] = (),
    remap: LabelRemap | None = None,
    emit: Callable[[str, Any], None] | None = None,
) -> FrameOutputs:
    """The ``wanted`` outputs (any of :data:`OUTPUTS`) of one frame, each computed only when wanted.

    ``per_classifier`` / ``leaf`` are the decisions at the resolution of ``image`` (the RGB input
    the overlay is drawn on); ``sign_lut`` from :func:`sign_leaf_lut`, None = no sign detection;
    ``min_sign_area`` / ``sign_split``: :func:`find_signs`'s ``min_area`` / ``split``.
    ``colored_classifiers``: the classifiers whose mask is wanted in colour (the node's
    ``~/<classifier>/colored``, part of output kind ``masks``). ``remap``: a loaded label remap
    table (:mod:`hiseg_ros.label_remap`) whose label space is wanted too (the node's
    ``~/remapped/mask``). Raises ``ValueError`` naming an unknown output kind or classifier.

    ``emit(field, value)``, when given, is called as soon as each :class:`FrameOutputs` field is
    ready, cheapest first (masks, classifier_colored, leaf, remapped, signs, colored, overlay), so a
    caller can publish an output while the next one is computed: a subscriber in another process
    then deserialises the early messages while the expensive ones are drawn (node overhead:
    docs/BENCHMARKS.md, node section).
    """
    unknown = sorted(set(wanted) - set(OUTPUTS))
    if unknown:
        raise ValueError(f"render: unknown output(s) {unknown}; expected any of {', '.join(OUTPUTS)}")
    unknown = sorted(set(colored_classifiers) - set(hierarchy.classifier_names))
    if unknown:
        raise ValueError(f"render: unknown classifier(s) {unknown} in colored_classifiers")

    def ready(field: str, value: Any) -> Any:
        if emit is not None and value is not None:
            emit(field, value)
        return value

    all_masks = None
    if "masks" in wanted or colored_classifiers:
        all_masks = classifier_masks(hierarchy, per_classifier, leaf)
    masks = ready("masks", all_masks if "masks" in wanted else None)
    clf_colored = None
    if colored_classifiers and all_masks is not None:
        clf_colored = {name: colorize_classifier(hierarchy, name, all_masks[name]) for name in colored_classifiers}
    ready("classifier_colored", clf_colored)
    leaf_out = ready("leaf", leaf if "mask" in wanted else None)
    remapped = ready("remapped", remap.apply(leaf) if remap is not None else None)
    signs = None
    if "traffic_signs" in wanted or "overlay" in wanted:
        signs = find_signs(hierarchy, leaf, sign_lut, min_sign_area, sign_split) if sign_lut is not None else []
    ready("signs", signs)
    colored = over = None
    if "colored" in wanted or "overlay" in wanted:
        colored = colorize(hierarchy, leaf)
        ready("colored", colored if "colored" in wanted else None)
        if "overlay" in wanted:
            over = ready("overlay", overlay(image, colored, overlay_alpha, signs, hierarchy.palette))
    return FrameOutputs(
        masks=masks,
        classifier_colored=clf_colored,
        leaf=leaf_out,
        colored=colored if "colored" in wanted else None,
        overlay=over,
        signs=signs,
        remapped=remapped,
    )
