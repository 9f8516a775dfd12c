"""The raw ``sensor_msgs/Image`` encodings the node reads: one table, one decoder per memory layout.

:mod:`hiseg_ros.imaging` looks an encoding up here, checks the message against its
:class:`PixelFormat` (size, even dimensions, ``step``, data length) and then calls :func:`decode`
on the checked buffer, so nothing in this module validates or raises for bad input: every read
below stays inside ``step * data_rows(height)`` bytes by construction.

Layouts (names and byte layouts from ``sensor_msgs/image_encodings.hpp`` and V4L2):

- ``packed``: interleaved channels of 8 or 16 bits (``rgb8`` ... ``bgra16``, ``mono8``/``mono16``).
- ``bayer``: one sample per pixel in a 2x2 colour filter pattern named by its first two rows
  (``bayer_rggb8``: the first row is R G R G ..., the second G B G B ...). OpenCV names its
  demosaicing codes after the second row's second and third pixels, hence the shifted mapping
  in ``_BAYER_CODES`` (the same one cv_bridge uses; tests/runtime/test_imaging.py checks it on
  mosaics built from the pattern's definition).
- ``yuv422``: packed 4:2:2, two bytes per pixel (``uyvy``: U Y0 V Y1; ``yuyv``: Y0 U Y1 V).
- ``yuv420sp``: semi-planar 4:2:0: ``height`` rows of Y, then ``height / 2`` rows of interleaved
  chroma (``nv12``: U V ...; ``nv21``: V U ...), both planes with the message's ``step``.

YUV is decoded with OpenCV's ITU-R BT.601 limited-range ("video range") matrix, the V4L2 default.
16-bit samples become 8-bit by a right shift of ``shift`` bits, saturated at 255 (see
:mod:`hiseg_ros.imaging` for why); with ``shift=8`` that is the top byte, read in place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ALIASES", "FORMATS", "PixelFormat", "decode"]


@dataclass(frozen=True)
class PixelFormat:
    """How one encoding lays out its pixels in ``msg.data``."""

    name: str
    layout: str  # "packed", "bayer", "yuv422" or "yuv420sp"
    order: str  # channel order ("rgb", "bgra", "gray"), Bayer pattern ("rggb") or YUV order ("uyvy", "nv12")
    bits: int = 8  # bits per sample

    @property
    def samples_per_pixel(self) -> int:
        """Samples per pixel in a row (the Y plane's for ``yuv420sp``)."""
        if self.layout == "packed":
            return 1 if self.order == "gray" else len(self.order)
        return 2 if self.layout == "yuv422" else 1

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes per pixel of a row: ``step`` must be at least ``width`` times this."""
        return self.samples_per_pixel * self.bits // 8

    @property
    def even_width(self) -> bool:
        """Chroma (or the Bayer pattern) is shared by pixel pairs along a row."""
        return self.layout != "packed"

    @property
    def even_height(self) -> bool:
        """Chroma (or the Bayer pattern) is shared by pairs of rows."""
        return self.layout in ("bayer", "yuv420sp")

    def data_rows(self, height: int) -> int:
        """Rows of ``step`` bytes in ``msg.data``: the Y plane and, for 4:2:0, the chroma plane below it."""
        return height + height // 2 if self.layout == "yuv420sp" else height


def _table() -> dict[str, PixelFormat]:
    formats = [PixelFormat(f"{order}{bits}", "packed", order, bits) for bits in (8, 16) for order in ("rgb", "bgr")]
    formats += [PixelFormat(f"{order}{bits}", "packed", order, bits) for bits in (8, 16) for order in ("rgba", "bgra")]
    formats += [PixelFormat("mono8", "packed", "gray"), PixelFormat("mono16", "packed", "gray", 16)]
    formats += [
        PixelFormat(f"bayer_{pattern}{bits}", "bayer", pattern, bits)
        for bits in (8, 16)
        for pattern in ("rggb", "bggr", "gbrg", "grbg")
    ]
    formats += [PixelFormat(name, "yuv422", name) for name in ("uyvy", "yuyv")]
    formats += [PixelFormat(name, "yuv420sp", name) for name in ("nv12", "nv21")]
    return {f.name: f for f in formats}


#: Canonical encoding name -> its layout.
FORMATS: dict[str, PixelFormat] = _table()

#: Other names for the same layouts: the deprecated YUV names, and the OpenCV matrix types that
#: cv_bridge publishes for 8-bit images (OpenCV's channel order is BGR).
ALIASES: dict[str, str] = {
    "yuv422": "uyvy",
    "yuv422_yuy2": "yuyv",
    "8UC1": "mono8",
    "8UC3": "bgr8",
    "8UC4": "bgra8",
}


@functools.cache
def _cv2() -> Any:
    import cv2  # imported on first use: the packed 8-bit views do not need it

    return cv2


# OpenCV's name for each ROS pattern (see the module docstring).
_BAYER_CODES = {
    "rggb": "COLOR_BayerBG2RGB",
    "bggr": "COLOR_BayerRG2RGB",
    "gbrg": "COLOR_BayerGR2RGB",
    "grbg": "COLOR_BayerGB2RGB",
}
_YUV_CODES = {
    "uyvy": "COLOR_YUV2RGB_UYVY",
    "yuyv": "COLOR_YUV2RGB_YUYV",
    "nv12": "COLOR_YUV2RGB_NV12",
    "nv21": "COLOR_YUV2RGB_NV21",
}


def _samples(
    fmt: PixelFormat, buf: np.ndarray, height: int, width: int, step: int, bigendian: bool, shift: int
) -> np.ndarray:
    """The ``HxWxC`` 8-bit samples: a view of ``buf`` for 8-bit data and for 16-bit data with ``shift=8``."""
    c = fmt.samples_per_pixel
    if fmt.bits == 8:
        return np.ndarray((height, width, c), dtype=np.uint8, buffer=buf, strides=(step, c, 1))
    if shift == 8:
        # The top byte of each sample, read in place: offset 1 (little-endian) or 0 (big-endian).
        offset = 0 if bigendian else 1
        return np.ndarray((height, width, c), dtype=np.uint8, buffer=buf, offset=offset, strides=(step, 2 * c, 2))
    dtype = np.dtype(">u2" if bigendian else "<u2")
    wide = np.ndarray((height, width, c), dtype=dtype, buffer=buf, strides=(step, 2 * c, 2))
    shifted = wide >> np.uint16(shift)
    if shift < 8:
        np.minimum(shifted, 255, out=shifted)
    return shifted.astype(np.uint8)


def _read_only(view: np.ndarray) -> np.ndarray:
    if view.flags.writeable:
        view.flags.writeable = False  # a view of the message buffer: never write through it
    return view


def _packed(fmt: PixelFormat, samples: np.ndarray, copy: bool) -> np.ndarray:
    if fmt.order == "gray":
        plane = samples[:, :, 0]
        if copy:
            return _cv2().cvtColor(np.ascontiguousarray(plane), _cv2().COLOR_GRAY2RGB)
        return _read_only(np.broadcast_to(plane[:, :, None], (*plane.shape, 3)))
    if copy and samples.strides[2] == 1:
        if fmt.order == "rgb":
            return np.array(samples, order="C")
        cv2 = _cv2()
        code = {"bgr": cv2.COLOR_BGR2RGB, "rgba": cv2.COLOR_RGBA2RGB, "bgra": cv2.COLOR_BGRA2RGB}[fmt.order]
        return cv2.cvtColor(samples, code)  # much faster than numpy's strided channel copy
    rgb = samples[:, :, 2::-1] if fmt.order.startswith("bgr") else samples[:, :, :3]
    return np.ascontiguousarray(rgb) if copy else _read_only(rgb)


def decode(
    fmt: PixelFormat,
    buf: np.ndarray,
    height: int,
    width: int,
    step: int,
    bigendian: bool,
    shift: int = 8,
    copy: bool = False,
) -> np.ndarray:
    """``HxWx3`` uint8 RGB from a buffer already checked against ``fmt`` (at least ``step * data_rows``).

    ``packed`` results are read-only views of ``buf`` unless ``copy`` (or a 16-bit shift other
    than 8) asks for new memory; the other layouts are always converted into a new array.
    """
    cv2 = _cv2() if fmt.layout != "packed" else None
    if fmt.layout == "yuv420sp":
        planes = np.ndarray((fmt.data_rows(height), width), dtype=np.uint8, buffer=buf, strides=(step, 1))
        return cv2.cvtColor(planes, getattr(cv2, _YUV_CODES[fmt.order]))
    samples = _samples(fmt, buf, height, width, step, bigendian, shift)
    if fmt.layout == "packed":
        return _packed(fmt, samples, copy)
    if fmt.layout == "yuv422":
        return cv2.cvtColor(samples, getattr(cv2, _YUV_CODES[fmt.order]))
    mosaic = np.ascontiguousarray(samples[:, :, 0])  # bayer
    return cv2.cvtColor(mosaic, getattr(cv2, _BAYER_CODES[fmt.order]))
