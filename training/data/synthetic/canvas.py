"""Three aligned rasters drawn together: RGB image, Vistas label ids, instance ids.

Every primitive writes the same pixels into all three maps, so the ground truth is
exact by construction (the painter's algorithm gives occlusion for free: whatever is
drawn later is nearer and wins in the image, the labels and the instances alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.data.readers.label_tables import VISTAS_V12_ID

from .camera import SCALE, SHIFT

Color = tuple[int, int, int]
UNLABELED = VISTAS_V12_ID["void--unlabeled"]


@dataclass(frozen=True)
class Instance:
    """One visible object of a scene.

    bbox is the inclusive (x0, y0, x1, y1) extent of its *visible* pixels; `area` counts
    them. `occluded` means something nearer hides part of what was drawn, `truncated`
    that the object continues beyond the image border (Open Images box flags).
    """

    id: int
    label: int  # Vistas v1.2 label id
    bbox: tuple[int, int, int, int]
    gtsdb_class: int | None = None  # front traffic signs only
    subtype: str | None = None  # persons: "man", "woman", "boy", "girl"
    area: int = 0
    occluded: bool = False
    truncated: bool = False


@dataclass
class _Draft:
    label: int
    gtsdb_class: int | None
    subtype: str | None
    x0: float = np.inf
    y0: float = np.inf
    x1: float = -np.inf
    y1: float = -np.inf
    drawn_area: int = 0


class Canvas:
    """Drawing surface; ids of instances are 1.. in creation order (0 = no instance)."""

    def __init__(self, height: int, width: int) -> None:
        self.height = height
        self.width = width
        self.image = np.zeros((height, width, 3), np.uint8)
        self.labels = np.full((height, width), UNLABELED, np.uint8)
        self.instances = np.zeros((height, width), np.int32)
        self.ground_shade = np.ones((height, width), np.float32)
        self._drafts: list[_Draft] = []

    # -- instance bookkeeping -------------------------------------------------------------
    def begin(self, label: int, gtsdb_class: int | None = None, subtype: str | None = None) -> int:
        """Open a new instance; draw its parts with `instance=` the returned id, then `end` it."""
        self._drafts.append(_Draft(label, gtsdb_class, subtype))
        return len(self._drafts)

    def end(self, iid: int) -> None:
        """Record how many pixels the instance had right after drawing (for occlusion)."""
        window = self._window(self._drafts[iid - 1])
        if window is not None:
            self._drafts[iid - 1].drawn_area = int(np.count_nonzero(self.instances[window] == iid))

    def _touch(self, iid: int, x0: float, y0: float, x1: float, y1: float) -> None:
        d = self._drafts[iid - 1]
        d.x0, d.y0, d.x1, d.y1 = min(d.x0, x0), min(d.y0, y0), max(d.x1, x1), max(d.y1, y1)

    def _window(self, d: _Draft) -> tuple[slice, slice] | None:
        if not np.isfinite(d.x0):
            return None
        x0, y0 = max(int(np.floor(d.x0)) - 1, 0), max(int(np.floor(d.y0)) - 1, 0)
        x1, y1 = min(int(np.ceil(d.x1)) + 2, self.width), min(int(np.ceil(d.y1)) + 2, self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        return slice(y0, y1), slice(x0, x1)

    # -- primitives -----------------------------------------------------------------------
    def fill(self, polys: list[np.ndarray], color: Color, label: int, instance: int = 0) -> None:
        """Fill fixed-point polygons (see camera.to_fixed) in all three maps."""
        if not polys:
            return
        cv2.fillPoly(self.image, polys, tuple(int(c) for c in color), cv2.LINE_8, SHIFT)
        cv2.fillPoly(self.labels, polys, int(label), cv2.LINE_8, SHIFT)
        cv2.fillPoly(self.instances, polys, int(instance), cv2.LINE_8, SHIFT)
        if instance:
            allpts = np.concatenate(polys) / SCALE
            lo, hi = allpts.min(0), allpts.max(0)
            self._touch(instance, lo[0], lo[1], hi[0], hi[1])

    def lines(
        self, polylines: list[np.ndarray], color: Color, label: int, thickness_px: float, instance: int = 0
    ) -> None:
        """Open polylines of a given pixel thickness (at least one pixel wide)."""
        if not polylines:
            return
        t = max(1, round(thickness_px))
        cv2.polylines(self.image, polylines, False, tuple(int(c) for c in color), t, cv2.LINE_8, SHIFT)
        cv2.polylines(self.labels, polylines, False, int(label), t, cv2.LINE_8, SHIFT)
        cv2.polylines(self.instances, polylines, False, int(instance), t, cv2.LINE_8, SHIFT)
        if instance:
            allpts = np.concatenate(polylines) / SCALE
            lo, hi = allpts.min(0) - t, allpts.max(0) + t
            self._touch(instance, lo[0], lo[1], hi[0], hi[1])

    def paste(self, x0: int, y0: int, rgb: np.ndarray, mask: np.ndarray, label: int, instance: int = 0) -> None:
        """Copy a sprite (rgb where mask) with its top-left corner at (x0, y0), clipped."""
        h, w = mask.shape
        ax0, ay0 = max(x0, 0), max(y0, 0)
        ax1, ay1 = min(x0 + w, self.width), min(y0 + h, self.height)
        if instance:
            self._touch(instance, x0, y0, x0 + w - 1, y0 + h - 1)
        if ax0 >= ax1 or ay0 >= ay1:
            return
        m = mask[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
        win = slice(ay0, ay1), slice(ax0, ax1)
        self.image[win][m] = rgb[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0][m]
        self.labels[win][m] = label
        self.instances[win][m] = instance

    def shadow(self, polys: list[np.ndarray], factor: float) -> None:
        """Darken the ground under objects; applied once, before the objects are drawn."""
        if polys:
            cv2.fillPoly(self.ground_shade, polys, float(factor), cv2.LINE_8, SHIFT)

    def apply_ground_shade(self) -> None:
        blurred = cv2.GaussianBlur(self.ground_shade, (0, 0), 1.5)
        self.image = np.clip(self.image * blurred[..., None], 0, 255).astype(np.uint8)
        self.ground_shade.fill(1.0)

    # -- result ---------------------------------------------------------------------------
    def finish(self) -> tuple[Instance, ...]:
        """Visible instances with exact pixel extents; fully hidden ones are dropped."""
        out = []
        for iid, d in enumerate(self._drafts, start=1):
            window = self._window(d)
            if window is None:
                continue
            hit = self.instances[window] == iid
            area = int(np.count_nonzero(hit))
            if area == 0:
                continue
            rows = np.flatnonzero(hit.any(1))
            cols = np.flatnonzero(hit.any(0))
            oy, ox = window[0].start, window[1].start
            bbox = (int(ox + cols[0]), int(oy + rows[0]), int(ox + cols[-1]), int(oy + rows[-1]))
            truncated = d.x0 < 0 or d.y0 < 0 or d.x1 > self.width - 1 or d.y1 > self.height - 1
            occluded = area < 0.97 * max(d.drawn_area, area)
            out.append(Instance(iid, d.label, bbox, d.gtsdb_class, d.subtype, area, occluded, truncated))
        return tuple(out)
