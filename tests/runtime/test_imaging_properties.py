"""Property-based tests of hiseg_ros.imaging: whatever a camera or a broken bag sends, the conversion
returns an ``HxWx3`` uint8 RGB array of the message's size or raises ImageConversionError, never
another exception, and never reads outside ``msg.data``.

Messages are real sensor_msgs classes with arbitrary encodings (known, near misses and random
text), sizes from 0, steps, ``is_bigendian`` bytes and data lengths around the exact one. The
examples are derandomized (the same ones every run, no example database), so CI is deterministic.
"""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hiseg_ros.imaging import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    bytes_per_pixel,
    compressed_to_rgb,
    image_to_rgb,
    raw_to_rgb,
)

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NEAR_MISSES = ["", " RGB8 ", "8uc3", "8UC2", "16UC1", "32FC1", "nv24", "bayer_rggb", "yuv420", "rgb"]
ENCODINGS = st.one_of(st.sampled_from(SUPPORTED_ENCODINGS), st.sampled_from(NEAR_MISSES), st.text(max_size=12))


def _data_rows(encoding: str, height: int) -> int:
    """Rows of ``step`` bytes a supported encoding's data has (written here from the V4L2 layouts)."""
    return height + height // 2 if encoding in ("nv12", "nv21") else height


@st.composite
def raw_images(draw: st.DrawFn) -> dict:
    """The fields of a sensor_msgs/Image: three in four near a valid message (a supported encoding,
    some row padding, the exact data length), the rest anything, so that both outcomes are common."""
    near_valid = draw(st.integers(0, 3)) > 0
    height = draw(st.integers(1 if near_valid else 0, 6))
    width = draw(st.integers(1 if near_valid else 0, 6))
    if near_valid:
        encoding = draw(st.sampled_from(SUPPORTED_ENCODINGS))
        step = width * bytes_per_pixel(encoding) + draw(st.sampled_from([0, 0, 1, 3, 8]))
        size = step * _data_rows(encoding, height) + draw(st.sampled_from([0, 0, 0, 0, -1, 1]))
    else:
        encoding = draw(ENCODINGS)
        try:
            bpp = bytes_per_pixel(encoding)
        except ImageConversionError:
            bpp = draw(st.integers(1, 6))
        step = draw(st.integers(0, width * bpp + 9))
        size = draw(st.integers(0, 3 * step * height + 8))
    size = max(size, 0)
    return {
        "height": height,
        "width": width,
        "step": step,
        "encoding": encoding,
        "is_bigendian": draw(st.integers(0, 255)),
        "data": draw(st.binary(min_size=size, max_size=size)),
    }


def _image_msg(fields: dict):
    from sensor_msgs.msg import Image

    msg = Image(**{k: v for k, v in fields.items() if k != "data"})
    msg.data = fields["data"]
    return msg


@PROPERTY
@given(fields=raw_images(), shift=st.integers(0, 15), copy=st.booleans())
def test_an_image_message_converts_or_raises_the_conversion_error(fields, shift, copy):
    msg = _image_msg(fields)
    try:
        out = image_to_rgb(msg, mono16_shift=shift, copy=copy)
    except ImageConversionError:
        return
    assert out.shape == (msg.height, msg.width, 3) and out.dtype == np.uint8
    assert len(msg.data) >= msg.step * msg.height, "converted without the step * height bytes a row layout needs"
    if copy:
        assert out.flags.c_contiguous and out.flags.owndata


@PROPERTY
@given(fields=raw_images(), fill=st.integers(0, 255))
def test_row_padding_never_reaches_the_pixels(fields, fill):
    """Bytes after ``width * bytes_per_pixel`` in each row are padding: changing them changes nothing."""
    try:
        before = raw_to_rgb(**fields, copy=True)
    except ImageConversionError:
        return
    row_bytes = fields["width"] * bytes_per_pixel(fields["encoding"])
    rows = np.frombuffer(fields["data"], np.uint8).reshape(-1, fields["step"]).copy()
    rows[:, row_bytes:] = fill
    after = raw_to_rgb(**{**fields, "data": rows.tobytes()}, copy=True)
    np.testing.assert_array_equal(after, before)


@PROPERTY
@given(
    fields=raw_images(),
    height=st.integers(-3, 8),
    width=st.integers(-3, 8),
    step=st.integers(-4, 60),
    cut=st.integers(1, 8),
)
def test_raw_fields_out_of_any_range_and_short_data_raise(fields, height, width, step, cut):
    """The message-free entry point with negative fields, and data cut short, raises the conversion error."""
    fields = {**fields, "height": height, "width": width, "step": step}
    try:
        out = raw_to_rgb(**fields)
    except ImageConversionError:
        pass
    else:
        assert out.shape == (height, width, 3) and out.dtype == np.uint8
        short = {**fields, "data": fields["data"][:-cut]}
        try:
            raw_to_rgb(**short)
        except ImageConversionError as exc:
            assert str(exc).startswith("data: ")
        else:
            raise AssertionError("converted data shorter than the message's layout")


# --- compressed ------------------------------------------------------------------------------------

FORMATS = st.one_of(
    st.sampled_from(
        ["jpeg", "png", "bgr8; jpeg compressed bgr8", "rgb8; png compressed ", "16UC1; compressedDepth png"]
    ),
    st.text(max_size=16),
)


@st.composite
def compressed_payloads(draw: st.DrawFn) -> tuple[bytes, tuple[int, int] | None]:
    """(data, (height, width) of the image it encodes when it is intact, else None)."""
    kind = draw(st.sampled_from(["random", "intact", "mutated", "truncated"]))
    if kind == "random":
        return draw(st.binary(max_size=64)), None
    height, width, channels = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.sampled_from([1, 3, 4]))
    pixels = draw(st.binary(min_size=height * width * channels, max_size=height * width * channels))
    image = np.frombuffer(pixels, np.uint8).reshape(height, width, channels)
    ext = draw(st.sampled_from([".png", ".jpg"]))
    if ext == ".jpg" and channels == 4:
        image = image[:, :, :3]
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(image))
    assert ok
    data = bytearray(encoded.tobytes())
    if kind == "intact":
        return bytes(data), (height, width)
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data) - 1))]), None
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data), None


@PROPERTY
@given(payload=compressed_payloads(), fmt=FORMATS)
def test_a_compressed_message_converts_or_raises_the_conversion_error(payload, fmt):
    from sensor_msgs.msg import CompressedImage

    data, size = payload
    msg = CompressedImage(format=fmt)
    msg.data = data
    try:
        out = compressed_to_rgb(msg, max_pixels=4096)
    except ImageConversionError:
        assert size is None or "compresseddepth" in fmt.replace(" ", "").lower(), "an intact image was refused"
        return
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
    assert 0 < out.shape[0] * out.shape[1] <= 4096
    if size is not None:
        assert out.shape[:2] == size
