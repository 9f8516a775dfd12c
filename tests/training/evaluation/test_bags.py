"""training.evaluation.bags write / read: Cityscapes folder -> rosbag2 -> frames, and the errors.

No DDS here: bags are written and read with the pure-Python ``rosbags`` package.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hiseg_ros.hierarchy import load_hierarchy
from hiseg_ros.messages import stamp_ns, time_msg
from hiseg_ros.node_params import SPEC
from hiseg_ros.outputs import SignDetection
from training import REPO
from training.data.readers.cityscapes import CityscapesDataset
from training.evaluation.bags.options import parse_options
from training.evaluation.bags.read import BagError, FrameReader, iter_frames, open_bag_info
from training.evaluation.bags.result import (
    BagResult,
    FrameCounts,
    LatencyStats,
    LiveDetails,
    NodeDetails,
    OfflineDetails,
    ViewScore,
)
from training.evaluation.bags.sign_truth import read_sidecar, scale_signs, sidecar_path
from training.evaluation.bags.write import (
    DEFAULT_HIERARCHY,
    compressed_cdr,
    image_cdr,
    write_bag,
    write_cityscapes_bag,
)

START = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    """The 'small' synthetic Cityscapes set at half size (64 x 128): train 6, val 3 images."""
    from training.data.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(out, "small", only=["cityscapes"], scale=0.5)
    return out / "cityscapes"


def _dataset_in_order(root: Path, split: str) -> list:
    ds = CityscapesDataset(root, split)
    return [ds[i] for i in sorted(range(len(ds)), key=lambda i: ds.sample_ids[i])]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_write_then_read_back_stamps_rate_images_and_labels(cityscapes, tmp_path, storage):
    bag = tmp_path / f"drive_{storage}"
    summary = write_cityscapes_bag(
        cityscapes, bag, "train", storage=storage, rate_hz=4.0, start_ns=START, frame_id="cam0"
    )
    assert summary.frames == 6 and (summary.height, summary.width) == (64, 128)
    assert sorted(p.name for p in tmp_path.iterdir()) == [bag.name], "no temporary folder left behind"
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert (bag / "metadata.yaml").is_file() and (bag / f"{bag.name}{suffix}").is_file()
    meta = (bag / "metadata.yaml").read_text()
    assert "version: 9" in meta and f"storage_identifier: {storage}" in meta

    info = open_bag_info(bag)
    assert (info.camera_topic, info.label_topic, info.storage) == ("/camera/image_raw", "/camera/labels", storage)
    assert info.frame_count == 6 and info.label_count == 6 and info.start_ns == START
    assert info.rate_hz == pytest.approx(4.0)

    expected = _dataset_in_order(cityscapes, "train")
    reader = FrameReader(bag)
    frames = list(reader)
    assert [f.index for f in frames] == list(range(6))
    for i, (frame, sample) in enumerate(zip(frames, expected, strict=True)):
        assert frame.stamp_ns == START + i * 250_000_000 == frame.bag_time_ns
        assert frame.frame_id == "cam0" and frame.camera_msgtype == "sensor_msgs/msg/Image"
        np.testing.assert_array_equal(frame.rgb, sample.image)
        np.testing.assert_array_equal(frame.label, sample.label)
    assert reader.stats.with_label == 6 and reader.stats.without_label == 0 and reader.stats.orphan_labels == 0


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_sign_ground_truth_written_from_the_sidecars_and_read_back_by_stamp(cityscapes, tmp_path, storage):
    hierarchy = load_hierarchy(DEFAULT_HIERARCHY)
    expected = _dataset_in_order(cityscapes, "train")
    truth = [read_sidecar(sidecar_path(Path(s.label_path)), hierarchy)[0] for s in expected]
    assert sum(len(t) for t in truth) > 0, "the synthetic set has signs to carry"
    names = {leaf for leaf in hierarchy.dataset("gtsdb").ids.values()}
    assert {sign.class_name for t in truth for sign in t} <= names  # the names the node publishes

    bag = tmp_path / "drive"
    summary = write_cityscapes_bag(cityscapes, bag, "train", storage=storage, start_ns=START)
    assert (summary.sign_topic, summary.sign_frames) == ("/camera/traffic_signs_gt", 6)
    info = open_bag_info(bag)
    assert info.sign_topic == "/camera/traffic_signs_gt" and info.sign_count == 6
    assert info.topics[info.sign_topic] == "vision_msgs/msg/Detection2DArray"
    reader = FrameReader(bag)
    frames = list(reader)
    for frame, want in zip(frames, truth, strict=True):
        got = [(d.x, d.y, d.width, d.height, d.class_name, d.score) for d in frame.signs]
        assert got == [(t.x, t.y, t.width, t.height, t.class_name, 1.0) for t in want]
    assert reader.stats.with_signs == 6 and reader.stats.orphan_signs == 0
    # the stamps of the sign messages are the images' (what pairs them)
    from rosbags.rosbag2 import Reader

    from training.evaluation.bags.vision_types import vision_typestore

    store = vision_typestore()[0]
    with Reader(bag) as raw_reader:
        conns = [c for c in raw_reader.connections if c.topic == info.sign_topic]
        stamps = [
            (t, stamp_ns(store.deserialize_cdr(raw, c.msgtype).header.stamp))
            for c, t, raw in raw_reader.messages(connections=conns)
        ]
    assert stamps == [(f.stamp_ns, f.stamp_ns) for f in frames]
    # '' leaves the topic out; a bag without it reads with signs None
    no_signs = write_cityscapes_bag(cityscapes, tmp_path / "plain", "train", sign_topic=None, start_ns=START)
    assert no_signs.sign_topic is None
    assert [f.signs for f in FrameReader(no_signs.path)] == [None] * 6


def test_signs_out_of_step_pair_with_their_frame_and_missing_sidecars_give_none(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    signs = [[SignDetection(2, 3, 5, 4, 20, 7, "sign-stop", 1.0)], [], None]
    bag = write_bag(tmp_path / "b", [(im, None, sg) for im, sg in zip(images, signs, strict=True)], start_ns=START)
    assert bag.sign_frames == 2
    frames = list(FrameReader(bag.path))
    assert [None if f.signs is None else [(d.x, d.y, d.width, d.height, d.class_name) for d in f.signs]
            for f in frames] == [[(2, 3, 5, 4, "sign-stop")], [], None]  # fmt: skip


def test_sign_boxes_scale_with_the_image():
    sign = SignDetection(10, 20, 8, 4, 32, 1, "sign-stop", 1.0)  # columns 10..17, rows 20..23
    (half,) = scale_signs([sign], (100, 200), (50, 100))
    assert (half.x, half.y, half.width, half.height) == (5, 10, 4, 2)
    (same,) = scale_signs([sign], (100, 200), (100, 200))
    assert same == sign
    (tiny,) = scale_signs([SignDetection(199, 99, 1, 1, 1, 1, "s", 1.0)], (100, 200), (10, 20))
    assert (tiny.x, tiny.y, tiny.width, tiny.height) == (19, 9, 1, 1)  # stays inside, at least 1 px


def test_compressed_png_is_lossless_and_jpeg_close(cityscapes, tmp_path):
    expected = _dataset_in_order(cityscapes, "val")
    for fmt in ("png", "jpeg"):
        bag = write_cityscapes_bag(cityscapes, tmp_path / fmt, "val", image_format=fmt, start_ns=START).path
        info = open_bag_info(bag)  # asked for /camera/image_raw, found its /compressed sibling
        assert info.camera_topic == "/camera/image_raw/compressed" and info.compressed
        for frame, sample in zip(iter_frames(bag), expected, strict=True):
            np.testing.assert_array_equal(frame.label, sample.label)
            if fmt == "png":
                np.testing.assert_array_equal(frame.rgb, sample.image)
            else:
                assert np.abs(frame.rgb.astype(int) - sample.image).mean() < 8


def test_write_command_line(cityscapes, tmp_path):
    out = tmp_path / "cli_bag"
    cmd = [
        sys.executable,
        "-m",
        "training.evaluation.bags.write",
        str(cityscapes),
        str(out),
        "--split",
        "val",
        "--limit",
        "2",
    ]
    cmd += ["--storage", "mcap", "--rate", "20", "--start-ns", str(START), "--no-progress", "--city", "lindau"]
    cmd += ["--city", "munster"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2 frames" in done.stdout and "RuntimeWarning" not in done.stderr
    frames = list(iter_frames(out))
    assert [f.stamp_ns for f in frames] == [START, START + 50_000_000]
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "exists" in again.stderr


def test_write_is_atomic_when_the_source_fails(tmp_path):
    def frames():
        yield np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="unplugged"):
        write_bag(tmp_path / "bag", frames())
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- bags as ROS 2 tools write them
def _rosbags_bag(path: Path, storage: str, messages: list[tuple[str, str, int, bytes]]) -> Path:
    """A bag written with plain ``rosbags`` (what ``ros2 bag record`` produces, byte for byte in layout)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, t, raw in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], t, raw)
    return path


def _raw_image(array: np.ndarray, encoding: str, stamp: int, frame_id: str = "cam") -> bytes:
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    t = store.types
    arr = np.ascontiguousarray(array)
    flat = arr.view(np.uint8).reshape(arr.shape[0], -1)
    msg = t["sensor_msgs/msg/Image"](
        header=t["std_msgs/msg/Header"](stamp=time_msg(stamp, t["builtin_interfaces/msg/Time"]), frame_id=frame_id),
        height=arr.shape[0],
        width=arr.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=flat.shape[1],
        data=flat.reshape(-1),
    )
    return bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_foreign_bag_pairs_by_header_stamp(tmp_path, storage):
    """bgr8 camera, 8UC1 labels recorded out of step, a frame without label, a label without frame."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (6, 10, 3), dtype=np.uint8) for _ in range(4)]
    labels = [rng.integers(0, 34, (6, 10), dtype=np.uint8) for _ in range(4)]
    s = [START + i * 100_000_000 for i in range(4)]
    cam, lab, img, im = "/front/image", "/front/gt", "sensor_msgs/msg/Image", "sensor_msgs/msg/Image"
    msgs = [
        (lab, im, s[0] + 1000, _raw_image(labels[0], "8UC1", s[0])),  # label recorded before its frame
        (cam, img, s[0] + 5000, _raw_image(images[0][..., ::-1], "bgr8", s[0])),
        (cam, img, s[1] + 5000, _raw_image(images[1][..., ::-1], "bgr8", s[1])),
        (cam, img, s[2] + 5000, _raw_image(images[2][..., ::-1], "bgr8", s[2])),
        (lab, im, s[2] + 9000, _raw_image(labels[2], "mono8", s[2])),  # frame 1 has no label
        (lab, im, s[1] - 7, _raw_image(labels[3], "mono8", s[1] - 7)),  # label of no frame
        (cam, img, s[3] + 5000, _raw_image(images[3][..., ::-1], "bgr8", s[3])),
        (lab, im, s[3] + 8000, _raw_image(labels[3], "mono8", s[3])),
        ("/other", "std_msgs/msg/String", s[3], b"\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00"),
    ]
    bag = _rosbags_bag(tmp_path / "foreign", storage, msgs)
    reader = FrameReader(bag, cam, lab, max_pending=2)
    frames = list(reader)
    assert [f.stamp_ns for f in frames] == s
    assert [f.bag_time_ns for f in frames] == [t + 5000 for t in s]
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.rgb, images[i])
        if i == 1:
            assert frame.label is None
        else:
            np.testing.assert_array_equal(frame.label, labels[i])
    assert (reader.stats.with_label, reader.stats.without_label, reader.stats.orphan_labels) == (3, 1, 1)
    # a foreign bag has no sign ground truth: no sign topic, frames without signs, read as before
    assert reader.info.sign_topic is None and [f.signs for f in frames] == [None] * 4
    assert reader.stats.with_signs == 0
    # without ground-truth topic: frames only
    assert [f.label for f in iter_frames(bag, cam, None)] == [None] * 4
    # decode=False keeps the raw message for replay and skips the pixels
    raw = next(iter_frames(bag, cam, lab, decode=False))
    assert raw.rgb is None and raw.camera_raw == msgs[1][3]


def test_many_frames_without_labels_stream_with_bounded_pending(tmp_path):
    n = 120
    msgs = [
        ("/c", "sensor_msgs/msg/Image", START + i, _raw_image(np.full((2, 2, 3), i % 256, np.uint8), "rgb8", START + i))
        for i in range(n)
    ]
    msgs.append(("/l", "sensor_msgs/msg/Image", START + n, _raw_image(np.zeros((2, 2), np.uint8), "mono8", START + 5)))
    bag = _rosbags_bag(tmp_path / "long", "sqlite3", msgs)
    reader = FrameReader(bag, "/c", "/l", max_pending=8)
    it = iter(reader)
    first = next(it)
    assert first.index == 0 and first.label is None
    assert reader.stats.frames == 1  # yielded before the rest was read
    rest = list(it)
    assert len(rest) == n - 1 and reader.stats.frames == n
    assert reader.stats.orphan_labels == 1  # frame 5 was released long before its label came


# ---------------------------------------------------------------------------- errors
@pytest.fixture
def good_bag(tmp_path) -> Path:
    frames = [(np.full((8, 12, 3), i, np.uint8), np.full((8, 12), 7, np.uint8)) for i in range(5)]
    return write_bag(tmp_path / "good", frames, rate_hz=10, start_ns=START).path


def test_missing_bag_and_missing_topics_name_bag_and_topic(good_bag, tmp_path):
    with pytest.raises(BagError, match=r"bag .*nowhere, topic /camera/image_raw: does not exist"):
        open_bag_info(tmp_path / "nowhere")
    with pytest.raises(BagError, match=r"bag .*good, topic /nope: camera topic not in the bag.*/camera/labels"):
        open_bag_info(good_bag, "/nope")
    with pytest.raises(BagError, match=r"bag .*good, topic /gt: ground-truth topic not in the bag"):
        FrameReader(good_bag, label_topic="/gt", require_labels=True)
    assert open_bag_info(good_bag, label_topic="/gt").label_topic is None  # optional ground truth
    with pytest.raises(BagError, match=r"topic /camera/labels: has type|topic /camera/labels"):
        # a label topic is fine; a non-image camera topic is not
        other = _rosbags_bag(
            tmp_path / "strings",
            "sqlite3",
            [("/camera/labels", "std_msgs/msg/String", 1, b"\x00\x01\x00\x00\x01\x00\x00\x00\x00")],
        )
        open_bag_info(other, "/camera/labels")


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_corrupt_and_truncated_bags_name_bag_and_topic(tmp_path, storage):
    frames = [(np.full((32, 48, 3), i, np.uint8), np.full((32, 48), 7, np.uint8)) for i in range(20)]
    bag = write_bag(tmp_path / "bag", frames, storage=storage, start_ns=START).path
    data_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    whole = data_file.read_bytes()
    data_file.write_bytes(whole[: len(whole) // 2])  # truncated, e.g. by a full disk or a crash
    with pytest.raises(BagError, match=rf"bag {bag}, topic /camera/image_raw: .*(corrupt|truncated)") as err:
        list(iter_frames(bag))
    assert err.value.topic == "/camera/image_raw"
    data_file.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BagError, match=rf"bag {bag}, topic /camera/image_raw: "):
        list(iter_frames(bag))
    (bag / "metadata.yaml").write_text("not: [valid")
    with pytest.raises(BagError, match=rf"bag {bag}, topic /camera/image_raw: cannot open"):
        open_bag_info(bag)


def test_unreadable_encodings_name_bag_topic_and_message(tmp_path):
    img = np.zeros((4, 6, 3), np.uint8)
    cam_bad = [
        ("/camera/image_raw", "sensor_msgs/msg/Image", START, _raw_image(img, "rgb8", START)),
        ("/camera/image_raw", "sensor_msgs/msg/Image", START + 1, _raw_image(img[..., 0], "32FC1", START + 1)),
    ]
    bag = _rosbags_bag(tmp_path / "cam", "sqlite3", cam_bad)
    with pytest.raises(BagError, match=r"topic /camera/image_raw: message 1 .*cannot read image: encoding"):
        list(iter_frames(bag))
    lab_bad = [
        ("/camera/image_raw", "sensor_msgs/msg/Image", START, _raw_image(img, "rgb8", START)),
        ("/camera/labels", "sensor_msgs/msg/Image", START, _raw_image(img, "rgb8", START)),
    ]
    bag = _rosbags_bag(tmp_path / "lab", "mcap", lab_bad)
    with pytest.raises(BagError, match=r"topic /camera/labels: message 0 .*label image encoding 'rgb8'"):
        list(iter_frames(bag))
    jpeg_label = compressed_cdr(img, "jpeg", START, "cam")
    lab_jpeg = [
        ("/camera/image_raw", "sensor_msgs/msg/Image", START, image_cdr(img, "rgb8", START, "cam")),
        ("/camera/labels", "sensor_msgs/msg/CompressedImage", START, jpeg_label),
    ]
    bag = _rosbags_bag(tmp_path / "labjpeg", "sqlite3", lab_jpeg)
    with pytest.raises(BagError, match=r"topic /camera/labels: .*lossless png"):
        list(iter_frames(bag))
    broken = [("/camera/image_raw", "sensor_msgs/msg/Image", START, _raw_image(img, "rgb8", START)[:40])]
    bag = _rosbags_bag(tmp_path / "short", "sqlite3", broken)
    with pytest.raises(BagError, match=r"topic /camera/image_raw: message 0 cannot be deserialized"):
        list(iter_frames(bag))


def test_png_compressed_labels_are_read(tmp_path):
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    label = np.arange(24, dtype=np.uint8).reshape(4, 6)
    _, png = cv2.imencode(".png", label)
    t = store.types
    msg = t["sensor_msgs/msg/CompressedImage"](
        header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c"),
        format="png",
        data=png.reshape(-1),
    )
    raw = bytes(store.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    img = np.zeros((4, 6, 3), np.uint8)
    msgs = [
        ("/camera/image_raw", "sensor_msgs/msg/Image", 10**9, image_cdr(img, "rgb8", 10**9, "c")),
        ("/camera/labels", "sensor_msgs/msg/CompressedImage", 10**9, raw),
    ]
    frame = next(iter_frames(_rosbags_bag(tmp_path / "png", "mcap", msgs)))
    np.testing.assert_array_equal(frame.label, label)


# ---------------------------------------------------------------------------- options and the typed result
def test_options_are_parsed_once_into_a_frozen_object(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opts = parse_options(["b", "--model", "m.onnx", "--out", "o", "--label-topic", "", "--node-arg=-p"])
    assert opts.model == tmp_path / "m.onnx" and opts.label_topic is None and opts.node_args == ("-p",)
    assert opts.mode == "offline" and opts.output_bag and opts.progress and opts.storage("mcap") == "mcap"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.mode = "live"  # type: ignore[misc]
    assert parse_options(["b", "--model", "m", "--out", "o", "--out-storage", "sqlite3"]).storage("mcap") == "sqlite3"
    with pytest.raises(SystemExit):
        parse_options(["b", "--model", "m", "--out", "o", "--rate-scale", "0"])


def test_offline_rendering_options_default_to_the_nodes_parameters():
    opts = parse_options(["b", "--model", "m", "--out", "o"])
    for name in ("overlay_alpha", "min_sign_area", "sign_split"):
        assert getattr(opts, name) == SPEC[name].default, name


def _result(mode: str):
    frames = FrameCounts(
        in_bag=3, processed=3, with_outputs=2, dropped=1, partial=0, with_gt=2, without_gt=0, late_outputs=0
    )
    live = mode == "live"
    node = NodeDetails(["python"], 0, "node.log", {"frames_received": "3"})
    details = LiveDetails(9.5, 1.0, 10.0, node, LatencyStats.of([]))
    return BagResult(
        complete=False,
        reason="1 frame(s) got no output",
        mode=mode,
        bag="/bags/drive",
        model="/m.onnx",
        dataset="cityscapes",
        camera_topic="/camera/image_raw",
        label_topic=None,
        frames=frames,
        latency_kind="latency stamp->all outputs" if live else "inference time",
        latency_ms=LatencyStats.of([10.0, 20.0]),
        fps=None,
        wall_seconds=1.5,
        recorded_rate_hz=10.0,
        output_bag=None,
        output_topics=["/segmentation_node/mask"],
        evaluation={"classifiers": {"root": {"miou": 0.5, "num_samples": 2}}, "datasets": {}},
        classifier_view="v",
        notes=["a note"],
        samples=["samples/frame_000000.png"],
        offline=None if live else OfflineDetails("onnxruntime", "requested"),
        live=details if live else None,
    )


@pytest.mark.parametrize("mode", ["offline", "live"])
def test_bag_result_written_and_loaded_back(tmp_path, mode):
    result = _result(mode)
    path = result.write(tmp_path / "metrics.json")
    data = json.loads(path.read_text())
    assert data["latency_ms"] == {"count": 2, "p50": 15.0, "p95": 19.5, "p99": 19.9, "mean": 15.0, "max": 20.0}
    assert ("engine" in data) == (mode == "offline") and ("node" in data) == (mode == "live")
    loaded = BagResult.load(path)
    assert loaded == result and loaded.to_text() == path.read_text()
    assert loaded.classifier_scores() == {"root": ViewScore(0.5, 2)} and loaded.dataset_scores() == {}
    if mode == "live":
        assert data["first_output_latency_ms"] == LatencyStats(0).to_json() and data["node"]["exit_code"] == 0
    del data["frames"]["dropped"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"{path}: not a bag evaluation result \(no key 'dropped'\)"):
        BagResult.load(path)
    with pytest.raises(ValueError, match="needs exactly its own details"):
        BagResult(**{**result.__dict__, "offline": None, "live": None})


def test_bag_result_sign_keys_come_last_and_older_files_still_load(tmp_path):
    from training.evaluation.bags.sign_scores import SignScoring

    sign = SignDetection(0, 0, 30, 30, 900, 1, "sign-stop", 1.0)
    scoring = SignScoring().add([sign], [sign])
    result = dataclasses.replace(_result("offline"), sign_topic="/camera/traffic_signs_gt", signs=scoring.to_json())
    data = json.loads(result.write(tmp_path / "metrics.json").read_text())
    old_keys = [
        *("complete", "reason", "mode", "bag", "model", "dataset", "camera_topic", "label_topic", "frames"),
        *("latency_kind", "latency_ms", "fps", "wall_seconds", "engine", "engine_choice", "recorded_rate_hz"),
        *("output_bag", "output_topics", "evaluation", "classifier_view", "notes", "samples"),
    ]
    assert list(data) == [*old_keys, "sign_topic", "signs"]  # the existing keys keep their order
    loaded = BagResult.load(tmp_path / "metrics.json")
    assert loaded == result
    scores = loaded.sign_scores()
    assert set(scores) == {"all", "at_least_24px"}
    assert (scores["all"].recall, scores["all"].class_accuracy, scores["all"].truth) == (1.0, 1.0, 1)
    # a metrics.json written before the sign scores: no sign keys, loads with None
    for key in ("sign_topic", "signs"):
        del data[key]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = BagResult.load(tmp_path / "old.json")
    assert old.sign_topic is None and old.signs is None and old.sign_scores() == {}
