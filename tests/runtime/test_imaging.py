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
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
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
    assert set(imaging.SUPPORTED_ENCODINGS) >= {"rgb8", "bgr8", "mono16", "uyvy", "yuyv", "yuv422"}


# --- zero copy -------------------------------------------------------------------------------------


def _msg(encoding, rows, height=H, width=W, bigendian=0, pad=0):
    from sensor_msgs.msg import Image

    data, step = _padded(rows, pad)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step)
    msg.data = data
    return msg


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
@pytest.mark.parametrize("pad", [0, 8])
def test_views_share_the_message_buffer(encoding, pad, rng):
    if encoding == "mono16":
        rows, expected = rng.integers(0, 65536, (H, W), dtype=np.uint16), None
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


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "", "16UC1", "nv12", "jpeg"])
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
    msg.encoding = "8UC3"
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
