"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Inputs (camera -> network)
--------------------------
``image_to_rgb(msg)`` turns a ``sensor_msgs/Image`` into an ``HxWx3`` ``uint8`` RGB array, and
``compressed_to_rgb(msg)`` does the same for a ``sensor_msgs/CompressedImage`` (JPEG / PNG).
``raw_to_rgb`` and ``decode_compressed`` are the same conversions on plain buffers, without any
message class.

Supported ``encoding`` values (names from ``sensor_msgs/image_encodings.hpp``; the byte layouts
are in :mod:`hiseg_ros.pixel_formats`):

=====================================  =========================================================
``rgb8``                               zero-copy view
``bgr8`` (``8UC3``)                    zero-copy view (channel axis reversed)
``rgba8`` / ``bgra8`` (``8UC4``)       zero-copy view (alpha dropped)
``mono8`` (``8UC1``)                   zero-copy view (the gray plane broadcast to 3 channels)
``mono16``                             zero-copy view of the high bytes (default ``mono16_shift=8``);
                                       other shifts compute one new 8-bit plane (see below)
``rgb16`` / ``bgr16`` / ``rgba16`` /   as mono16, per channel: zero-copy view of the high bytes
``bgra16``                             with the default shift, else a new array
``bayer_rggb8`` / ``bayer_bggr8`` /    Bayer mosaic, demosaiced by OpenCV (bilinear) into a new
``bayer_gbrg8`` / ``bayer_grbg8``      array; width and height must be even
``bayer_*16`` (same four patterns)     shifted to 8 bit as mono16, then demosaiced
``uyvy`` (``yuv422``)                  packed YUV 4:2:2, U Y0 V Y1; converted (new array)
``yuyv`` (``yuv422_yuy2``)             packed YUV 4:2:2, Y0 U Y1 V; converted (new array)
``nv12`` / ``nv21``                    YUV 4:2:0: ``height`` rows of Y, then ``height / 2`` rows of
                                       U V (nv12) or V U (nv21) pairs, both with ``step``; data is
                                       ``step * (height + height / 2)`` bytes; converted
=====================================  =========================================================

``yuv422`` and ``yuv422_yuy2`` are the older (now deprecated) names of ``uyvy`` and ``yuyv``;
``8UC1``/``8UC3``/``8UC4`` are the OpenCV matrix types cv_bridge publishes for 8-bit images,
read as mono8/bgr8/bgra8 (OpenCV's channel order). ``nv24`` (YUV 4:4:4) is not supported:
OpenCV has no limited-range 4:4:4 decoder; nor are depth and other matrix types (``16UC1``,
``32FC1``): they are not camera images. ``is_bigendian`` matters only for 16-bit encodings.
YUV is decoded with OpenCV's ITU-R BT.601 limited-range ("video range") matrix, which is what
V4L2 cameras that emit YUV use by default.

Zero-copy results are read-only numpy views of ``msg.data``: row padding (``step`` larger than
``width * bytes_per_pixel``) is skipped with strides, never copied. Pass ``copy=True`` to get a
C-contiguous, writable array that owns its memory.

16-bit policy (mono16, rgb16 ... bgra16, bayer_*16): each 16-bit sample is shifted right by
``mono16_shift`` bits (default 8, i.e. the top byte) and saturated at 255. A fixed shift keeps
brightness consistent from frame to frame and between frames of a sequence, which a segmentation
network trained on 8-bit images needs, and it is exact for sensors that use the full 16-bit
range. Per-frame min-max stretching was rejected: it makes the same scene look different
depending on what else is in view, and amplifies noise in flat frames. For a 10- or 12-bit
sensor that stores values in the low bits, use ``mono16_shift=2`` or ``4``.

Outputs (network -> ROS)
------------------------
``mono8_msg``, ``mono16_msg``, ``float32_msg`` (``32FC1``) and ``rgb8_msg`` build
``sensor_msgs/Image`` messages from arrays, filling ``height``, ``width``, ``step``, ``encoding``
and ``is_bigendian``; the pixels are copied once, at memcpy speed. With ``serialized=True`` they
return the message's serialized form instead (:mod:`hiseg_ros.image_wire`), for
``Publisher.publish(bytes)``: the node publishes its output images that way, skipping rclpy's two
further copies of every image. ``compressed_rgb_msg`` encodes an
RGB array as a ``sensor_msgs/CompressedImage`` (JPEG or PNG) with image_transport's ``format``
string (``"rgb8; jpeg compressed bgr8"``), which image_transport's compressed subscriber and
:func:`compressed_to_rgb` read.

Errors
------
Every invalid input raises ``ImageConversionError`` (a ``ValueError``) that names the field and
what was expected.
"""

from __future__ import annotations

import array
import functools
import sys
from typing import Any, TypeAlias

import numpy as np

from .image_wire import serialize_image
from .pixel_formats import ALIASES, FORMATS, PixelFormat, decode

#: Anything np.frombuffer accepts: bytes, bytearray, memoryview, array.array('B'), numpy arrays.
BufferLike: TypeAlias = bytes | bytearray | memoryview | array.array | np.ndarray

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_ENCODINGS",
    "BufferLike",
    "ImageConversionError",
    "bytes_per_pixel",
    "compressed_rgb_msg",
    "compressed_to_rgb",
    "decode_compressed",
    "float32_msg",
    "image_to_rgb",
    "mono8_msg",
    "mono16_msg",
    "raw_to_rgb",
    "rgb8_msg",
]

#: Largest image accepted by default: 8K UHD, 7680 x 4320 = 33,177,600 pixels.
DEFAULT_MAX_PIXELS = 7680 * 4320


class ImageConversionError(ValueError):
    """An image message or buffer could not be converted; the message says which field and why."""


#: Every ``encoding`` string ``image_to_rgb`` accepts (matched ignoring case and surrounding spaces).
SUPPORTED_ENCODINGS: tuple[str, ...] = (*FORMATS, *ALIASES)

_BY_KEY: dict[str, PixelFormat] = {
    **{name.lower(): fmt for name, fmt in FORMATS.items()},
    **{alias.lower(): FORMATS[name] for alias, name in ALIASES.items()},
}


@functools.cache
def _cv2() -> Any:
    import cv2  # imported on first use: only compressed input needs it here

    return cv2


def bytes_per_pixel(encoding: str) -> int:
    """Bytes per pixel of a row of a supported encoding: ``step`` must be at least ``width`` times this
    (2 for packed YUV 4:2:2, 1 for nv12/nv21, whose chroma rows follow the Y rows)."""
    return _lookup(encoding).bytes_per_pixel


def _lookup(encoding: str) -> PixelFormat:
    if isinstance(encoding, str):
        fmt = FORMATS.get(encoding) or _BY_KEY.get(encoding.strip().lower())
        if fmt is not None:
            return fmt
    raise ImageConversionError(
        f"encoding: unsupported image encoding {encoding!r}; expected one of {', '.join(SUPPORTED_ENCODINGS)}"
    )


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        msg = f"height/width: image is {width}x{height} (width x height); both must be at least 1"
        raise ImageConversionError(msg)
    if height * width > max_pixels:
        raise ImageConversionError(
            f"height/width: image is {width}x{height} = {height * width} pixels, more than the "
            f"limit of {max_pixels} pixels (max_pixels)"
        )


def _as_uint8_buffer(data: BufferLike) -> np.ndarray:
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise ImageConversionError(
            f"data: expected a bytes-like buffer (bytes, array.array('B'), memoryview), got "
            f"{type(data).__name__}: {exc}"
        ) from exc
    return buf


def raw_to_rgb(
    data: BufferLike,
    height: int,
    width: int,
    step: int,
    encoding: str,
    is_bigendian: bool | int = False,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mono16_shift: int = 8,
    copy: bool = False,
) -> np.ndarray:
    """Convert a raw image buffer (the fields of ``sensor_msgs/Image``) to ``HxWx3`` uint8 RGB.

    ``data`` is any buffer (``bytes``, ``array.array('B')``, ``memoryview``, numpy array).
    See the module docstring for the encodings, the 16-bit policy and which results are
    zero-copy views. ``copy=True`` always returns a C-contiguous array that owns its memory.
    """
    fmt = _lookup(encoding)
    height, width, step = int(height), int(width), int(step)
    if fmt.bits == 16 and not 0 <= int(mono16_shift) <= 15:
        raise ImageConversionError(f"mono16_shift: expected 0..15 bits, got {mono16_shift}")
    _check_size(height, width, max_pixels)
    for name, value, even in (("width", width, fmt.even_width), ("height", height, fmt.even_height)):
        if even and value % 2:
            raise ImageConversionError(f"{name}: must be even, {_SHARED[fmt.layout]} ({encoding}); got {value}")
    bpp = fmt.bytes_per_pixel
    row_bytes = width * bpp
    if step < row_bytes:
        raise ImageConversionError(
            f"step: {step} bytes per row is smaller than width * bytes per pixel = "
            f"{width} * {bpp} = {row_bytes} for encoding {encoding!r}"
        )
    buf = _as_uint8_buffer(data)
    rows = fmt.data_rows(height)
    expected = step * rows
    if buf.size != expected:
        what = "truncated" if buf.size < expected else "too long"
        formula = "step * height" if rows == height else "step * (height + height / 2)"
        raise ImageConversionError(f"data: {buf.size} bytes, {what}; expected {formula} = {step} * {rows} = {expected}")
    return decode(fmt, buf, height, width, step, bool(is_bigendian), int(mono16_shift), copy)


# What each layout with even dimensions shares between neighbouring pixels (for the error message).
_SHARED = {
    "yuv422": "packed YUV 4:2:2 shares one U/V pair between two pixels of a row",
    "yuv420sp": "YUV 4:2:0 shares one U/V pair among 2x2 pixels",
    "bayer": "a Bayer mosaic repeats every 2x2 pixels",
}


def image_to_rgb(
    msg: Any,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mono16_shift: int = 8,
    copy: bool = False,
) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` to an ``HxWx3`` uint8 RGB array (see ``raw_to_rgb``)."""
    return raw_to_rgb(
        msg.data,
        msg.height,
        msg.width,
        msg.step,
        msg.encoding,
        msg.is_bigendian,
        max_pixels=max_pixels,
        mono16_shift=mono16_shift,
        copy=copy,
    )


# --- compressed ------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers that carry the frame size (not DHT C4, JPG C8, DAC CC).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _compressed_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding, or None if not found."""
    head = buf[:32].tobytes()
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if not head.startswith(b"\xff\xd8"):
        return None
    data = memoryview(buf)  # walk the segment headers in place, no copy
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF and i + 9 <= len(data):
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        if marker == 0xDA or length < 2:  # start of scan: no frame header before it
            return None
        i += 2 + length
    return None


def decode_compressed(
    data: BufferLike,
    fmt: str = "",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode JPEG / PNG bytes (``sensor_msgs/CompressedImage.data``) to ``HxWx3`` uint8 RGB.

    ``fmt`` is the message's ``format`` string (``"jpeg"``, ``"png"``, or image_transport's
    ``"bgr8; jpeg compressed bgr8"``); it is only used to reject formats that are not plain
    JPEG/PNG (``compressedDepth``). The size in the JPEG/PNG header is checked against
    ``max_pixels`` before decoding. Gray images come back with three equal channels; 16-bit
    PNGs are reduced to 8 bit by OpenCV (top byte, the same policy as mono16).
    """
    if "compresseddepth" in (fmt or "").replace(" ", "").lower():
        raise ImageConversionError(
            f"format: {fmt!r} is compressed_depth_image_transport data (a config header before a "
            "PNG), not supported; expected jpeg or png"
        )
    buf = _as_uint8_buffer(data)
    if buf.size == 0:
        raise ImageConversionError("data: compressed image is empty (0 bytes)")
    size = _compressed_size(buf)
    if size is not None:
        _check_size(size[0], size[1], max_pixels)
    cv2 = _cv2()
    flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    try:
        img = cv2.imdecode(buf, flag if flag is not None else cv2.IMREAD_COLOR)
    except cv2.error as exc:
        img = None
        detail = f": {exc}"
    else:
        detail = ""
    if img is None:
        raise ImageConversionError(
            f"data: could not decode {buf.size} bytes of compressed image (format {fmt!r}); "
            f"expected valid JPEG or PNG data{detail}"
        )
    if flag is None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    _check_size(img.shape[0], img.shape[1], max_pixels)
    return img


def compressed_to_rgb(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` to ``HxWx3`` uint8 RGB (see ``decode_compressed``)."""
    return decode_compressed(msg.data, msg.format, max_pixels=max_pixels)


# --- builders ----------------------------------------------------------------------------------------


def _set_data(msg: Any, arr: np.ndarray) -> None:
    """Copy a C-contiguous array into ``msg.data`` once, by the fastest path the setter allows.

    With field checks off (the default) the generated setter runs ``array.array('B', value)``,
    which is a single memcpy for ``bytes``. With ``ROS_PYTHON_CHECK_FIELDS=1`` it would iterate
    over every byte of a ``bytes`` value, but keeps an ``array.array('B')`` as it is.
    """
    if getattr(msg, "_check_fields", False):
        data = array.array("B")
        data.frombytes(arr.data)
        msg.data = data
    else:
        msg.data = arr.tobytes()


def _new_image(header: Any) -> Any:
    from sensor_msgs.msg import Image  # keeps raw/compressed helpers message-free

    msg = Image()
    if header is not None:
        msg.header = header
    return msg


def _plane(array_in: Any, name: str, dtype: np.dtype, channels: int) -> np.ndarray:
    arr = np.asarray(array_in)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    want_ndim = 2 if channels == 1 else 3
    if arr.ndim != want_ndim or (channels > 1 and arr.shape[2] != channels):
        shape = "HxW" if channels == 1 else f"HxWx{channels}"
        raise ImageConversionError(f"array: {name} needs a {shape} array, got shape {arr.shape}")
    if arr.dtype.kind != dtype.kind or arr.dtype.itemsize != dtype.itemsize:
        raise ImageConversionError(f"array: {name} needs dtype {dtype.name}, got {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageConversionError(f"array: {name} got an empty {arr.shape[1]}x{arr.shape[0]} image")
    return arr


def _build(arr: np.ndarray, header: Any, encoding: str, is_bigendian: int, serialized: bool) -> Any:
    arr = np.ascontiguousarray(arr)
    if serialized:
        return serialize_image(arr, header, encoding, is_bigendian)
    msg = _new_image(header)
    msg.height = arr.shape[0]
    msg.width = arr.shape[1]
    msg.step = arr.strides[0]
    msg.encoding = encoding
    msg.is_bigendian = is_bigendian
    _set_data(msg, arr)
    return msg


def mono8_msg(array_in: Any, header: Any = None, *, serialized: bool = False) -> Any:
    """``sensor_msgs/Image`` (``mono8``) from an ``HxW`` (or ``HxWx1``) uint8 array."""
    arr = _plane(array_in, "mono8", np.dtype(np.uint8), 1)
    return _build(arr, header, "mono8", 0, serialized)


def mono16_msg(array_in: Any, header: Any = None, *, serialized: bool = False) -> Any:
    """``sensor_msgs/Image`` (``mono16``) from an ``HxW`` (or ``HxWx1``) uint16 array.

    Data is written in this machine's byte order and ``is_bigendian`` set to match; an array of
    the other byte order is converted.
    """
    arr = _plane(array_in, "mono16", np.dtype(np.uint16), 1)
    arr = np.ascontiguousarray(arr, dtype=np.dtype(np.uint16).newbyteorder("="))
    return _build(arr, header, "mono16", int(sys.byteorder == "big"), serialized)


def rgb8_msg(array_in: Any, header: Any = None, *, serialized: bool = False) -> Any:
    """``sensor_msgs/Image`` (``rgb8``) from an ``HxWx3`` uint8 RGB array."""
    arr = _plane(array_in, "rgb8", np.dtype(np.uint8), 3)
    return _build(arr, header, "rgb8", 0, serialized)


def float32_msg(array_in: Any, header: Any = None, *, serialized: bool = False) -> Any:
    """``sensor_msgs/Image`` (``32FC1``) from an ``HxW`` float32 array, in this machine's byte order."""
    arr = _plane(array_in, "32FC1", np.dtype(np.float32), 1)
    arr = np.ascontiguousarray(arr, dtype=np.dtype(np.float32).newbyteorder("="))
    return _build(arr, header, "32FC1", int(sys.byteorder == "big"), serialized)


COMPRESSED_FORMATS = ("jpeg", "png")


def compressed_rgb_msg(array_in: Any, header: Any = None, fmt: str = "jpeg", quality: int = 90) -> Any:
    """``sensor_msgs/CompressedImage`` of an ``HxWx3`` uint8 RGB array, ``fmt`` ``jpeg`` or ``png``.

    ``quality``: JPEG quality 1..100 (ignored for PNG, written with OpenCV's default compression).
    """
    import cv2
    from sensor_msgs.msg import CompressedImage

    if fmt not in COMPRESSED_FORMATS:
        raise ImageConversionError(f"format: {fmt!r} is not one of {', '.join(COMPRESSED_FORMATS)}")
    arr = _plane(array_in, "rgb8", np.dtype(np.uint8), 3)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f"array: OpenCV could not encode a {arr.shape[1]}x{arr.shape[0]} image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"rgb8; {fmt} compressed bgr8"
    _set_data(msg, encoded.reshape(-1))
    return msg
