"""hiseg_ros.imaging: sensor_msgs Image / CompressedImage <-> numpy without cv_bridge.

Most tests use the message-free helpers (raw_to_rgb, decode_compressed); the message wrappers are
checked on real sensor_msgs classes. No DDS traffic: nothing here creates a node.
"""

from __future__ import annotations

import timeit

import cv2
import numpy as np
import pytest

from hiseg_ros import imaging
from hiseg_ros.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageConversionError,
    compressed_to_rgb,
    decode_compressed,
    image_to_rgb,
    mono8_msg,
    mono16_msg,
    raw_to_rgb,
    rgb8_msg,
)

H, W = 6, 8  # small on purpose: exact memory-overlap checks stay cheap


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _random_rgb(rng, h=H, w=W):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _padded(rows: np.ndarray, pad: int, fill: int = 0xAB) -> tuple[bytes, int]:
    """Rows of bytes (H x rowbytes) with `pad` junk bytes appended to each row; returns (data, step)."""
    rows = np.ascontiguousarray(rows).reshape(rows.shape[0], -1).view(np.uint8)
    if pad:
        rows = np.concatenate([rows, np.full((rows.shape[0], pad), fill, np.uint8)], axis=1)
    return rows.tobytes(), rows.shape[1]


# --- independent references --------------------------------------------------------------------


def _bt601_limited_to_rgb(y, u, v):
    """ITU-R BT.601 limited-range YCbCr -> RGB, in float, written from the standard's matrix."""
    c = y.astype(np.float64) - 16.0
    d = u.astype(np.float64) - 128.0
    e = v.astype(np.float64) - 128.0
    r = 1.164 * c + 1.596 * e
    g = 1.164 * c - 0.392 * d - 0.813 * e
    b = 1.164 * c + 2.017 * d
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def _unpack_422(packed: np.ndarray, order: str):
    """Split an H x 2W byte array of packed 4:2:2 into per-pixel Y, U, V planes."""
    quads = packed.reshape(packed.shape[0], -1, 4)
    if order == "uyvy":
        u, y0, v, y1 = (quads[:, :, i] for i in range(4))
    else:  # yuyv
        y0, u, y1, v = (quads[:, :, i] for i in range(4))
    y = np.stack([y0, y1], axis=-1).reshape(packed.shape[0], -1)
    return y, np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1)


# --- every encoding against a reference --------------------------------------------------------


def _encode(encoding: str, rgb: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """(rows of message bytes, expected RGB) for an 8-bit RGB source image."""
    encoding = {"8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8"}.get(encoding, encoding)  # cv_bridge's
    if encoding == "rgb8":
        return rgb, rgb
    if encoding == "bgr8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), rgb
    if encoding in ("rgba8", "bgra8"):
        code = cv2.COLOR_RGB2RGBA if encoding == "rgba8" else cv2.COLOR_RGB2BGRA
        four = cv2.cvtColor(rgb, code)
        four[:, :, 3] = rng.integers(0, 256, rgb.shape[:2])  # alpha must not leak into RGB
        return four, rgb
    if encoding == "mono8":
        gray = rgb[:, :, 1].copy()
        return gray, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    raise AssertionError(encoding)


@pytest.mark.parametrize("pad", [0, 5, 64])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3", "8UC4"])
def test_8bit_encodings_match_reference(encoding, pad, rng):
    rgb = _random_rgb(rng)
    rows, expected = _encode(encoding, rgb, rng)
    data, step = _padded(rows, pad)
    out = raw_to_rgb(data, H, W, step, encoding)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    copied = raw_to_rgb(data, H, W, step, encoding, copy=True)
    np.testing.assert_array_equal(copied, expected)
    assert copied.flags.c_contiguous and copied.flags.writeable and copied.flags.owndata


@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_top_byte(bigendian, pad, rng):
    values = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    values[0, :4] = [0, 255, 256, 65535]
    data, step = _padded(values.astype(">u2" if bigendian else "<u2"), pad)
    out = raw_to_rgb(data, H, W, step, "mono16", bigendian)
    expected = np.repeat((values >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[0, :4, 0], [0, 0, 1, 255])
    np.testing.assert_array_equal(raw_to_rgb(data, H, W, step, "mono16", bigendian, copy=True), expected)


@pytest.mark.parametrize("shift", [0, 4, 12])
@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_other_shifts_saturate(shift, bigendian, rng):
    values = rng.integers(0, 4096, (H, W), dtype=np.uint16)
    data, step = _padded(values.astype(">u2" if bigendian else "<u2"), 2)
    out = raw_to_rgb(data, H, W, step, "mono16", bigendian, mono16_shift=shift)
    plane = np.minimum(values.astype(np.int64) >> shift, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, np.repeat(plane[:, :, None], 3, axis=2))


@pytest.mark.parametrize("pad", [0, 4, 7])
@pytest.mark.parametrize("encoding", ["uyvy", "yuv422", "yuyv", "yuv422_yuy2"])
def test_yuv422_against_bt601_reference(encoding, pad, rng):
    order = "uyvy" if encoding in ("uyvy", "yuv422") else "yuyv"
    packed = rng.integers(16, 241, (H, 2 * W), dtype=np.uint8)
    data, step = _padded(packed, pad)
    out = raw_to_rgb(data, H, W, step, encoding)
    expected = _bt601_limited_to_rgb(*_unpack_422(packed, order))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2
    # and OpenCV's own decoder gives the same, padding or not
    ref = cv2.cvtColor(packed.reshape(H, W, 2), getattr(cv2, f"COLOR_YUV2RGB_{order.upper()}"))
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("order", ["uyvy", "yuyv"])
def test_yuv422_round_trip_of_pairwise_constant_image(order, rng):
    # Chroma is shared by pixel pairs, so an image whose pairs have one colour survives 4:2:2.
    half = rng.integers(40, 216, (H, W // 2, 3), dtype=np.uint8)
    rgb = np.repeat(half, 2, axis=1)
    packed = cv2.cvtColor(rgb, getattr(cv2, f"COLOR_RGB2YUV_{order.upper()}"))
    out = raw_to_rgb(packed.tobytes(), H, W, 2 * W, order)
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 4
    swapped = raw_to_rgb(packed.tobytes(), H, W, 2 * W, "yuyv" if order == "uyvy" else "uyvy")
    assert np.abs(swapped.astype(int) - rgb.astype(int)).max() > 20  # the two layouts differ


def test_encoding_names_are_case_and_space_tolerant(rng):
    rgb = _random_rgb(rng)
    np.testing.assert_array_equal(raw_to_rgb(rgb.tobytes(), H, W, 3 * W, " RGB8 "), rgb)
    assert imaging.bytes_per_pixel("yuv422_yuy2") == 2
    np.testing.assert_array_equal(raw_to_rgb(rgb[:, :, ::-1].tobytes(), H, W, 3 * W, "8uc3 "), rgb)
    assert set(imaging.SUPPORTED_ENCODINGS) >= {"rgb8", "bgr8", "mono16", "uyvy", "yuyv", "yuv422"}


# --- 16-bit colour ---------------------------------------------------------------------------------


def test_16bit_hand_built_bytes_and_byte_order():
    # two rows of two rgb16 pixels, 12 bytes each plus 2 bytes of padding (step 14)
    row0 = bytes([0x10, 0x01, 0x20, 0x02, 0x30, 0x03, 0xFF, 0x00, 0x80, 0x7F, 0x00, 0xFF]) + b"\xee\xee"
    row1 = bytes(range(12)) + b"\xee\xee"
    data = row0 + row1
    big = raw_to_rgb(data, 2, 2, 14, "rgb16", True)
    assert big.tolist() == [[[0x10, 0x20, 0x30], [0xFF, 0x80, 0x00]], [[0, 2, 4], [6, 8, 10]]]
    little = raw_to_rgb(data, 2, 2, 14, "rgb16", False)
    assert little.tolist() == [[[0x01, 0x02, 0x03], [0x00, 0x7F, 0xFF]], [[1, 3, 5], [7, 9, 11]]]
    assert raw_to_rgb(data, 2, 2, 14, "bgr16", True)[0].tolist() == [[0x30, 0x20, 0x10], [0x00, 0x80, 0xFF]]
    # the full 16-bit value with a smaller shift: 0x0110 >> 4 = 0x11; 0x1001 >> 4 = 0x100 saturates
    assert raw_to_rgb(data, 2, 2, 14, "rgb16", False, mono16_shift=4)[0, 0].tolist() == [0x11, 0x22, 0x33]
    assert raw_to_rgb(data, 2, 2, 14, "rgb16", True, mono16_shift=4)[0, 0].tolist() == [255, 255, 255]
    assert raw_to_rgb(data, 2, 2, 14, "rgb16", True, mono16_shift=4)[1, 0].tolist() == [0x00, 0x20, 0x40]


@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["rgb16", "bgr16", "rgba16", "bgra16"])
def test_16bit_colour_encodings(encoding, bigendian, pad, rng):
    rgb16 = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    rgb16[0, 0] = [0x12FF, 0xAB00, 0x00FF]
    planes = dict(zip("rgb", np.moveaxis(rgb16, -1, 0), strict=True))
    planes["a"] = rng.integers(0, 65536, (H, W), dtype=np.uint16)  # alpha must not leak into RGB
    pixels = np.stack([planes[c] for c in encoding[:-2]], axis=-1)
    data, step = _padded(pixels.astype(">u2" if bigendian else "<u2"), pad)
    out = raw_to_rgb(data, H, W, step, encoding, bigendian)
    np.testing.assert_array_equal(out, (rgb16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(out[0, 0], [0x12, 0xAB, 0x00])
    copied = raw_to_rgb(data, H, W, step, encoding, bigendian, copy=True)
    np.testing.assert_array_equal(copied, out)
    assert copied.flags.c_contiguous and copied.flags.writeable and copied.flags.owndata
    for shift in (0, 4, 12):
        expected = np.minimum(rgb16.astype(np.int64) >> shift, 255).astype(np.uint8)
        np.testing.assert_array_equal(raw_to_rgb(data, H, W, step, encoding, bigendian, mono16_shift=shift), expected)


# --- Bayer -----------------------------------------------------------------------------------------

BAYER = ["rggb", "bggr", "gbrg", "grbg"]


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample RGB through a ROS Bayer pattern, by its definition: the pattern's first two letters are
    the colours of the first row's two pixels (repeating), its last two the second row's."""
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[colour]]
    return out


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("pattern", BAYER)
def test_bayer_pattern_mapping_on_flat_colours(pattern, pad):
    for colour in ([200, 100, 30], [20, 220, 90], [60, 10, 250]):
        rgb = np.broadcast_to(np.array(colour, np.uint8), (8, 10, 3))
        data, step = _padded(_mosaic(rgb, pattern), pad)
        out = raw_to_rgb(data, 8, 10, step, f"bayer_{pattern}8")
        assert out.shape == (8, 10, 3) and out.dtype == np.uint8 and out.flags.owndata
        np.testing.assert_array_equal(out[1:-1, 1:-1], rgb[1:-1, 1:-1])
        for other in set(BAYER) - {pattern}:  # the same bytes read as another pattern are other colours
            wrong = raw_to_rgb(data, 8, 10, step, f"bayer_{other}8")
            assert np.abs(wrong[2:-2, 2:-2].astype(int) - colour).max() > 40, other


@pytest.mark.parametrize("pattern", BAYER)
def test_bayer_demosaics_a_smooth_image_and_16bit_uses_the_top_byte(pattern):
    rgb = _smooth_rgb(24, 32)
    mosaic = _mosaic(rgb, pattern)
    out = raw_to_rgb(mosaic.tobytes(), 24, 32, 32, f"bayer_{pattern}8")
    assert np.abs(out[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2].astype(int)).mean() < 3
    for bigendian in (False, True):
        deep = (mosaic.astype(np.uint16) << 8) | 0x7F  # the low byte must not matter
        data, step = _padded(deep.astype(">u2" if bigendian else "<u2"), 6)
        np.testing.assert_array_equal(raw_to_rgb(data, 24, 32, step, f"bayer_{pattern}16", bigendian), out)


@pytest.mark.parametrize(("height", "width", "field"), [(4, 7, "width"), (5, 8, "height")])
def test_bayer_odd_size(height, width, field):
    text = _raises(
        rf"^{field}: must be even, a Bayer mosaic",
        raw_to_rgb,
        b"\0" * height * width,
        height,
        width,
        width,
        "bayer_rggb8",
    )
    assert str(height if field == "height" else width) in text


# --- YUV 4:2:0 (nv12 / nv21) -----------------------------------------------------------------------


def _nv_bytes(y: np.ndarray, u: np.ndarray, v: np.ndarray, order: str, pad: int) -> tuple[bytes, int]:
    """nv12/nv21 bytes by the V4L2 definition: the Y rows, then rows of U V (nv12) or V U (nv21) pairs."""
    pairs = np.stack([u, v] if order == "nv12" else [v, u], axis=-1).reshape(u.shape[0], -1)
    return _padded(np.concatenate([y, pairs]), pad)


def test_nv12_hand_built_pixels():
    # 2x2 pixels, one chroma pair: BT.601 video-range red is Y 81, U 90, V 240 (within rounding)
    y = np.array([[81, 81], [81, 81]], np.uint8)
    data, step = _nv_bytes(y, np.array([[90]], np.uint8), np.array([[240]], np.uint8), "nv12", 3)
    assert data == bytes([81, 81, 0xAB, 0xAB, 0xAB, 81, 81, 0xAB, 0xAB, 0xAB, 90, 240, 0xAB, 0xAB, 0xAB])
    red = raw_to_rgb(data, 2, 2, step, "nv12")
    assert np.abs(red.astype(int) - [255, 0, 0]).max() <= 3
    blue = raw_to_rgb(data, 2, 2, step, "nv21")  # the same bytes as V U: U 240, V 90 is a blue
    assert blue[0, 0, 2] > 200 and blue[0, 0, 0] < 60
    gray = np.array([[16, 235], [126, 126]], np.uint8)  # black, white and mid-gray with neutral chroma
    data, step = _nv_bytes(gray, np.array([[128]], np.uint8), np.array([[128]], np.uint8), "nv21", 0)
    out = raw_to_rgb(data, 2, 2, step, "nv21")
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
    assert np.abs(out[1].astype(int) - 128).max() <= 1


@pytest.mark.parametrize("pad", [0, 3, 16])
@pytest.mark.parametrize("order", ["nv12", "nv21"])
def test_nv12_nv21_against_bt601_reference(order, pad, rng):
    y = rng.integers(16, 236, (H, W), dtype=np.uint8)
    u = rng.integers(16, 241, (H // 2, W // 2), dtype=np.uint8)
    v = rng.integers(16, 241, (H // 2, W // 2), dtype=np.uint8)
    data, step = _nv_bytes(y, u, v, order, pad)
    assert len(data) == step * (H + H // 2)
    out = raw_to_rgb(data, H, W, step, order)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8

    def full(c):  # each chroma sample covers a 2x2 block
        return np.repeat(np.repeat(c, 2, axis=0), 2, axis=1)

    expected = _bt601_limited_to_rgb(y, full(u), full(v))
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2
    swapped = raw_to_rgb(data, H, W, step, "nv21" if order == "nv12" else "nv12")
    assert np.abs(swapped.astype(int) - expected.astype(int)).max() > 20


@pytest.mark.parametrize(("height", "width", "field"), [(4, 7, "width"), (5, 8, "height")])
def test_nv12_odd_size(height, width, field):
    _raises(rf"^{field}: must be even, YUV 4:2:0", raw_to_rgb, b"\0" * 64, height, width, width, "nv12")


def test_nv12_data_length_includes_the_chroma_rows():
    text = _raises(r"^data: 48 bytes, truncated", raw_to_rgb, b"\0" * 48, 6, 8, 8, "nv12")
    assert "step * (height + height / 2) = 8 * 9 = 72" in text
    _raises(r"^data: .*too long", raw_to_rgb, b"\0" * 73, 6, 8, 8, "nv21")
    _raises(
        r"^step: 7 bytes per row is smaller than width \* bytes per pixel = 8 \* 1",
        raw_to_rgb,
        b"\0" * 63,
        6,
        8,
        7,
        "nv12",
    )
    assert imaging.bytes_per_pixel("nv12") == 1 and imaging.bytes_per_pixel("rgb16") == 6


# --- zero copy -------------------------------------------------------------------------------------


def _msg(encoding, rows, height=H, width=W, bigendian=0, pad=0):
    from sensor_msgs.msg import Image

    data, step = _padded(rows, pad)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step)
    msg.data = data
    return msg


@pytest.mark.parametrize(
    "encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3", "8UC4", "mono16", "rgb16", "bgra16"]
)
@pytest.mark.parametrize("pad", [0, 8])
def test_views_share_the_message_buffer(encoding, pad, rng):
    if encoding.endswith("16"):
        channels = {"mono16": 1, "rgb16": 3, "bgra16": 4}[encoding]
        rows, expected = rng.integers(0, 65536, (H, W, channels), dtype=np.uint16), None
    else:
        rows, expected = _encode(encoding, _random_rgb(rng), rng)
    msg = _msg(encoding, rows, pad=pad)
    out = image_to_rgb(msg)
    message_buffer = np.frombuffer(msg.data, np.uint8)
    assert np.shares_memory(out, message_buffer), "expected a zero-copy view of msg.data"
    assert not out.flags.writeable, "views of the message buffer must be read-only"
    if expected is not None:
        np.testing.assert_array_equal(out, expected)
    copied = image_to_rgb(msg, copy=True)
    assert not np.shares_memory(copied, message_buffer)
    np.testing.assert_array_equal(copied, out)
    copied[0, 0] = 1  # writable
    assert out.shape == (H, W, 3)


def test_view_of_deserialized_message(rng):
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    rgb = _random_rgb(rng)
    msg = deserialize_message(serialize_message(_msg("bgr8", rgb[:, :, ::-1].copy(), pad=4)), Image)
    out = image_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


# --- errors ----------------------------------------------------------------------------------------


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(ImageConversionError, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    return str(info.value)


@pytest.mark.parametrize("encoding", ["nv24", "", "16UC1", "32FC1", "8UC2", "bayer_rggb", "jpeg"])
def test_unknown_encoding(encoding):
    text = _raises(r"^encoding: unsupported", raw_to_rgb, b"\0" * 48, 4, 4, 12, encoding)
    assert repr(encoding) in text and "rgb8" in text


def test_non_string_encoding():
    _raises(r"^encoding:", raw_to_rgb, b"\0" * 48, 4, 4, 12, None)


@pytest.mark.parametrize(("encoding", "step"), [("rgb8", 3 * W - 1), ("mono16", 2 * W - 1), ("mono8", 0)])
def test_step_too_small(encoding, step):
    text = _raises(r"^step: ", raw_to_rgb, b"\0" * (max(step, 1) * H), H, W, step, encoding)
    assert str(step) in text and f"{W} * " in text


def test_truncated_data():
    text = _raises(r"^data: .*truncated", raw_to_rgb, b"\0" * (3 * W * H - 1), H, W, 3 * W, "rgb8")
    assert str(3 * W * H) in text


def test_too_long_data():
    _raises(r"^data: .*too long", raw_to_rgb, b"\0" * (W * H + 1), H, W, W, "mono8")


def test_padded_data_must_include_last_row_padding():
    # step * height bytes are required, including the last row's padding
    _raises(r"^data: .*truncated", raw_to_rgb, b"\0" * (10 * H - 2), H, W, 10, "mono8")


@pytest.mark.parametrize(("height", "width"), [(0, 0), (0, 8), (8, 0), (-1, 8)])
def test_empty_image(height, width):
    _raises(r"^height/width: image is", raw_to_rgb, b"", height, width, 3 * max(width, 0), "rgb8")


def test_max_pixels_parameter(rng):
    rgb = _random_rgb(rng)
    _raises(r"more than the limit of 47 pixels", raw_to_rgb, rgb.tobytes(), H, W, 3 * W, "rgb8", max_pixels=47)
    raw_to_rgb(rgb.tobytes(), H, W, 3 * W, "rgb8", max_pixels=48)  # exactly at the limit is fine


def test_default_limit_is_8k_uhd_and_checked_before_the_data():
    assert DEFAULT_MAX_PIXELS == 7680 * 4320
    # no need to allocate 100 MB: the size is checked before the data length
    _raises(r"^height/width: .*33177600", raw_to_rgb, b"", 4320, 7681, 3 * 7681, "rgb8")
    _raises(r"^data: ", raw_to_rgb, b"", 4320, 7680, 3 * 7680, "rgb8")  # at the limit: next check


@pytest.mark.parametrize("encoding", ["uyvy", "yuyv", "yuv422", "yuv422_yuy2"])
def test_yuv_odd_width(encoding):
    text = _raises(r"^width: must be even", raw_to_rgb, b"\0" * 2 * 7 * 2, 2, 7, 14, encoding)
    assert "7" in text


def test_mono16_shift_range():
    _raises(r"^mono16_shift", raw_to_rgb, b"\0" * 2 * H * W, H, W, 2 * W, "mono16", mono16_shift=16)


def test_data_that_is_not_a_buffer():
    _raises(r"^data: expected a bytes-like buffer", raw_to_rgb, [0] * (H * W), H, W, W, "mono8")


def test_message_wrapper_reports_the_same_errors():
    msg = _msg("rgb8", np.zeros((H, W, 3), np.uint8))
    msg.step = 3 * W - 3
    _raises(r"^step: ", image_to_rgb, msg)
    msg = _msg("rgb8", np.zeros((H, W, 3), np.uint8))
    msg.encoding = "32FC3"
    _raises(r"^encoding: ", image_to_rgb, msg)


# --- compressed ------------------------------------------------------------------------------------


def _smooth_rgb(h=48, w=64):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (w + h - 2)], -1).astype(np.uint8)


def _imencode(ext, img, params=()):
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf


def _cmsg(fmt, data):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.data = bytes(data)
    return msg


def test_png_round_trip_is_exact(rng):
    rgb = _random_rgb(rng, 20, 30)
    png = _imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = compressed_to_rgb(_cmsg("png", png))
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous


def test_jpeg_round_trip_is_close():
    rgb = _smooth_rgb()
    jpg = _imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = compressed_to_rgb(_cmsg("bgr8; jpeg compressed bgr8", jpg))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3  # channel order kept (not BGR)


def test_gray_and_16bit_png():
    gray = _smooth_rgb()[:, :, 0]
    png = _imencode(".png", gray)
    out = decode_compressed(png, "mono8; png compressed mono8")
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))
    deep = gray.astype(np.uint16) * 257 + 3
    png16 = _imencode(".png", deep)
    out16 = decode_compressed(png16, "mono16; png compressed mono16")
    np.testing.assert_array_equal(out16[:, :, 0], (deep >> 8).astype(np.uint8))


def test_compressed_header_size_is_read_without_decoding():
    rgb = _smooth_rgb(40, 70)
    jpg = _imencode(".jpg", rgb)
    png = _imencode(".png", rgb)
    assert imaging._compressed_size(np.frombuffer(jpg, np.uint8)) == (40, 70)
    assert imaging._compressed_size(np.frombuffer(png, np.uint8)) == (40, 70)
    assert imaging._compressed_size(np.frombuffer(b"GIF89a....", np.uint8)) is None
    _raises(r"^height/width: .*2800 pixels, more than the limit of 2000", decode_compressed, jpg, max_pixels=2000)
    _raises(r"^height/width: .*more than the limit", decode_compressed, png, max_pixels=2000)


@pytest.mark.parametrize(
    "data",
    [b"not an image at all", b"\xff\xd8\xff\xe0garbage-jpeg", b"\x89PNG\r\n\x1a\n" + b"\0" * 40],
    ids=["random", "bad-jpeg", "bad-png"],
)
def test_corrupt_compressed(data):
    _raises(r"^data: could not decode", compressed_to_rgb, _cmsg("jpeg", data))


def test_truncated_jpeg_or_empty():
    jpg = _imencode(".jpg", _smooth_rgb())
    _raises(r"^data: could not decode", decode_compressed, jpg[:20], "jpeg")
    _raises(r"^data: compressed image is empty", decode_compressed, b"", "jpeg")


def test_compressed_depth_is_rejected():
    _raises(r"^format: .*compressed_depth", decode_compressed, b"\0" * 20, "16UC1; compressedDepth png")


# --- builders ----------------------------------------------------------------------------------------


def test_mono8_msg_fields_and_round_trip(rng):
    from std_msgs.msg import Header

    header = Header(frame_id="cam")
    header.stamp.sec = 42
    arr = rng.integers(0, 256, (H, W), dtype=np.uint8)
    msg = mono8_msg(arr, header)
    assert (msg.height, msg.width, msg.step, msg.encoding, msg.is_bigendian) == (H, W, W, "mono8", 0)
    assert msg.header.frame_id == "cam" and msg.header.stamp.sec == 42
    assert bytes(msg.data) == arr.tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg)[:, :, 0], arr)
    np.testing.assert_array_equal(mono8_msg(arr[:, :, None]).data, msg.data)  # HxWx1 accepted


def test_mono16_msg_native_and_swapped_input(rng):
    arr = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    msg = mono16_msg(arr)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (H, W, 2 * W, "mono16")
    dtype = ">u2" if msg.is_bigendian else "<u2"
    np.testing.assert_array_equal(np.frombuffer(msg.data, dtype).reshape(H, W), arr)
    swapped = mono16_msg(arr.astype(arr.dtype.newbyteorder()))  # other byte order in, same image out
    assert swapped.is_bigendian == msg.is_bigendian and bytes(swapped.data) == bytes(msg.data)
    np.testing.assert_array_equal(image_to_rgb(msg)[:, :, 0], (arr >> 8).astype(np.uint8))


def test_rgb8_msg_from_non_contiguous_array(rng):
    big = _random_rgb(rng, H, 2 * W)
    view = big[:, ::2]
    msg = rgb8_msg(view)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (H, W, 3 * W, "rgb8")
    np.testing.assert_array_equal(image_to_rgb(msg), view)


def test_builders_survive_serialization(rng):
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    arr = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    back = deserialize_message(serialize_message(mono16_msg(arr)), Image)
    np.testing.assert_array_equal(np.frombuffer(back.data, "<u2" if not back.is_bigendian else ">u2"), arr.ravel())


@pytest.mark.parametrize(
    ("builder", "bad", "match"),
    [
        (mono8_msg, np.zeros((H, W), np.uint16), r"^array: mono8 needs dtype uint8"),
        (mono8_msg, np.zeros((H, W, 3), np.uint8), r"^array: mono8 needs a HxW array"),
        (mono8_msg, np.zeros((0, W), np.uint8), r"^array: mono8 got an empty"),
        (mono16_msg, np.zeros((H, W), np.float32), r"^array: mono16 needs dtype uint16"),
        (rgb8_msg, np.zeros((H, W, 4), np.uint8), r"^array: rgb8 needs a HxWx3 array"),
        (rgb8_msg, np.zeros((H, W), np.uint8), r"^array: rgb8 needs a HxWx3 array"),
    ],
)
def test_builder_errors(builder, bad, match):
    _raises(match, builder, bad)


def test_builders_with_field_checks_enabled(monkeypatch, rng):
    """With ROS_PYTHON_CHECK_FIELDS=1 a bytes value would be checked byte by byte; stay fast."""
    import sensor_msgs.msg._image as image_module

    monkeypatch.setattr(image_module, "ros_python_check_fields", "1")
    arr = rng.integers(0, 256, (512, 1024), dtype=np.uint8)
    msg = mono8_msg(arr)
    assert msg._check_fields
    assert bytes(msg.data) == arr.tobytes()
    assert min(timeit.repeat(lambda: mono8_msg(arr), number=5, repeat=3)) / 5 < 0.01


def test_builder_and_conversion_speed_512x1024(rng):
    """Generous bounds (the measured values are ~10x lower) that catch a per-byte Python path."""
    arr = rng.integers(0, 256, (512, 1024), dtype=np.uint8)
    rgb = rng.integers(0, 256, (512, 1024, 3), dtype=np.uint8)

    def best(fn):
        return min(timeit.repeat(fn, number=5, repeat=3)) / 5

    assert best(lambda: mono8_msg(arr)) < 0.005
    msg = rgb8_msg(rgb)
    assert best(lambda: rgb8_msg(rgb)) < 0.01
    assert best(lambda: image_to_rgb(msg)) < 0.001


def test_float32_msg_is_32fc1_in_native_byte_order(rng):
    import sys

    arr = rng.random((H, W), dtype=np.float32)
    msg = imaging.float32_msg(arr)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (H, W, W * 4, "32FC1")
    assert msg.is_bigendian == int(sys.byteorder == "big")
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.float32).reshape(H, W), arr)
    with pytest.raises(ImageConversionError, match="32FC1 needs dtype float32"):
        imaging.float32_msg(arr.astype(np.float64))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_rgb_msg_round_trips_through_the_node_decoder(rng, fmt):
    from std_msgs.msg import Header

    smooth = cv2.GaussianBlur(_random_rgb(rng), (9, 9), 3)  # JPEG is close on smooth images
    msg = imaging.compressed_rgb_msg(smooth, Header(frame_id="cam"), fmt, quality=95)
    assert msg.format == f"rgb8; {fmt} compressed bgr8" and msg.header.frame_id == "cam"
    back = compressed_to_rgb(msg)
    if fmt == "png":
        np.testing.assert_array_equal(back, smooth)
    else:
        assert np.abs(back.astype(int) - smooth).mean() < 3
    with pytest.raises(ImageConversionError, match="format: 'webp' is not one of jpeg, png"):
        imaging.compressed_rgb_msg(smooth, None, "webp")
