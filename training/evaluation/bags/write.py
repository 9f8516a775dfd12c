"""Write an image sequence with ground truth into a rosbag2, e.g. a Cityscapes-format folder as a drive.

    python -m training.evaluation.bags.write ROOT OUT [--split val] [--city NAME ...] [--limit N]
        [--storage sqlite3|mcap] [--rate 10] [--format raw|jpeg|png] [--jpeg-quality 90]
        [--camera-topic /camera/image_raw] [--label-topic /camera/labels]
        [--sign-topic /camera/traffic_signs_gt] [--hierarchy config/hierarchies/iv2018.yaml]
        [--frame-id camera] [--start-ns NS] [--overwrite] [--no-progress]

The bag (rosbag2 version 9, ``Stores.ROS2_KILTED`` message definitions, readable by ``ros2 bag``)
holds, per frame ``i``, the camera image (``sensor_msgs/msg/Image`` rgb8 on the camera topic, or
``sensor_msgs/msg/CompressedImage`` jpeg / png on ``<camera topic>/compressed``, the image_transport
naming) and the ground-truth Cityscapes labelIds (``sensor_msgs/msg/Image`` mono8 on the label
topic) and, where the folder has ``<stem>_signs.json`` sidecars, the traffic-sign ground truth
(``vision_msgs/msg/Detection2DArray`` on the sign topic, class names from ``--hierarchy``:
:mod:`training.evaluation.bags.sign_truth`; left out without vision_msgs). All carry header stamp
``start + i / rate`` and ``frame_id``, and that stamp is also the bag's receive timestamp.
Frames are in sample-id order (city, sequence, frame). The bag is written
in a hidden sibling folder and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from tqdm import tqdm

from hiseg_ros.atomic import atomic_folder
from hiseg_ros.hierarchy import Hierarchy, load_hierarchy
from hiseg_ros.image_wire import serialize_image
from hiseg_ros.messages import NS_PER_S, time_msg
from hiseg_ros.outputs import SignDetection
from training import REPO
from training.data.readers.cityscapes import CityscapesDataset

from .output_bag import detections_cdr
from .read import COMPRESSED, DEFAULT_CAMERA_TOPIC, DEFAULT_LABEL_TOPIC, DEFAULT_SIGN_TOPIC, IMAGE, typestore
from .sign_truth import read_sidecar, sidecar_path
from .vision_types import DETECTIONS, vision_typestore

STORAGES = ("sqlite3", "mcap")
FORMATS = ("raw", "jpeg", "png")
DEFAULT_HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"
# one frame: (rgb, label ids or None) or (rgb, label ids or None, true signs or None)
Frame = tuple[np.ndarray, np.ndarray | None] | tuple[np.ndarray, np.ndarray | None, list[SignDetection] | None]


@dataclass
class WriteSummary:
    path: Path
    frames: int
    storage: str
    camera_topic: str
    label_topic: str | None
    rate_hz: float
    start_ns: int
    height: int = 0
    width: int = 0
    sign_topic: str | None = None  # None: no sign ground truth written
    sign_frames: int = 0


def _storage_plugin(storage: str) -> Any:
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


def _header(stamp: int, frame_id: str) -> Any:
    t = typestore().types
    return t["std_msgs/msg/Header"](stamp=time_msg(stamp, t["builtin_interfaces/msg/Time"]), frame_id=frame_id)


def image_cdr(array: np.ndarray, encoding: str, stamp: int, frame_id: str) -> bytes:
    """Serialized ``sensor_msgs/msg/Image``: ``HxW`` uint8 (mono8), ``HxWx3`` uint8 (rgb8) or ``HxW``
    uint16 (mono16, little endian) array; the node's own serializer, so bag and topic bytes agree."""
    dtype = "<u2" if encoding == "mono16" else np.uint8
    return serialize_image(np.ascontiguousarray(array, dtype=dtype), _header(stamp, frame_id), encoding, 0)


def compressed_cdr(rgb: np.ndarray, fmt: str, stamp: int, frame_id: str, jpeg_quality: int = 90) -> bytes:
    """Serialized ``sensor_msgs/msg/CompressedImage`` (jpeg / png of an RGB image)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise RuntimeError(f"cannot encode a {fmt} image")
    ts = typestore()
    msg = ts.types[COMPRESSED](
        header=_header(stamp, frame_id), format=f"rgb8; {fmt} compressed bgr8", data=data.reshape(-1)
    )
    return bytes(ts.serialize_cdr(msg, COMPRESSED))


def write_bag(
    out: Path | str,
    frames: Iterable[Frame],
    *,
    rate_hz: float = 10.0,
    storage: str = "sqlite3",
    camera_topic: str = DEFAULT_CAMERA_TOPIC,
    label_topic: str | None = DEFAULT_LABEL_TOPIC,
    sign_topic: str | None = DEFAULT_SIGN_TOPIC,
    frame_id: str = "camera",
    image_format: str = "raw",
    jpeg_quality: int = 90,
    start_ns: int | None = None,
    overwrite: bool = False,
    total: int | None = None,
    progress: bool = False,
) -> WriteSummary:
    """Write ``(rgb, label or None[, signs or None])`` frames as a bag at ``rate_hz`` (streaming; atomic).

    A frame's signs (true boxes, class names as the node publishes them) go to ``sign_topic`` as a
    Detection2DArray of the frame's stamp, empty for a frame without signs; frames with ``None``
    get no message, and a bag without any, or without vision_msgs installed, has no sign topic.
    """
    if rate_hz <= 0:
        raise ValueError(f"rate must be positive, got {rate_hz}")
    if image_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {image_format!r}")
    plugin = _storage_plugin(storage)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    start = time.time_ns() if start_ns is None else int(start_ns)
    cam_topic = camera_topic if image_format == "raw" else f"{camera_topic.rstrip('/')}/compressed"
    summary = WriteSummary(out, 0, storage, cam_topic, label_topic, rate_hz, start)
    # the rosbags Writer creates the folder and names the storage file after it
    with atomic_folder(out, create=False) as tmp_bag:
        ts = typestore()
        bar = tqdm(total=total, unit="frame", desc=f"bag {out.name}") if progress else None
        with Writer(tmp_bag, version=9, storage_plugin=plugin) as writer:
            cam_type = IMAGE if image_format == "raw" else COMPRESSED
            cam_conn = writer.add_connection(cam_topic, cam_type, typestore=ts, rihs01=ts.hash_rihs01(cam_type))
            lab_conn = None
            if label_topic:
                lab_conn = writer.add_connection(label_topic, IMAGE, typestore=ts, rihs01=ts.hash_rihs01(IMAGE))
            vision, has_vision = vision_typestore()
            sign_conn = None
            for i, (rgb, label, *rest) in enumerate(frames):
                signs = rest[0] if rest else None
                stamp = start + round(i * NS_PER_S / rate_hz)
                rgb = np.asarray(rgb)
                if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                    raise ValueError(f"frame {i}: expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
                if image_format == "raw":
                    cam = image_cdr(rgb, "rgb8", stamp, frame_id)
                else:
                    cam = compressed_cdr(rgb, image_format, stamp, frame_id, jpeg_quality)
                writer.write(cam_conn, stamp, cam)
                if lab_conn is not None and label is not None:
                    label = np.asarray(label)
                    if label.shape != rgb.shape[:2]:
                        raise ValueError(f"frame {i}: label {label.shape} does not match the image {rgb.shape[:2]}")
                    if label.dtype != np.uint8:
                        if label.size and (label.min() < 0 or label.max() > 255):
                            raise ValueError(f"frame {i}: label ids outside 0..255 cannot be stored as mono8")
                        label = label.astype(np.uint8)
                    writer.write(lab_conn, stamp, image_cdr(label, "mono8", stamp, frame_id))
                if signs is not None and sign_topic and has_vision:
                    if sign_conn is None:
                        rihs01 = vision.hash_rihs01(DETECTIONS)
                        sign_conn = writer.add_connection(sign_topic, DETECTIONS, typestore=vision, rihs01=rihs01)
                        summary.sign_topic = sign_topic
                    writer.write(sign_conn, stamp, detections_cdr(vision, signs, stamp, frame_id))
                    summary.sign_frames += 1
                summary.frames += 1
                summary.height, summary.width = rgb.shape[:2]
                if bar is not None:
                    bar.update()
        if bar is not None:
            bar.close()
    return summary


def cityscapes_frames(
    root: Path | str,
    split: str = "val",
    cities: Sequence[str] | None = None,
    limit: int | None = None,
    hierarchy: Hierarchy | None = None,
):
    """``(count, generator of (rgb, labelIds, signs or None))`` over a Cityscapes-format split, in
    sample-id order; ``signs`` from the sample's ``_signs.json`` sidecar, named through ``hierarchy``
    (default :data:`DEFAULT_HIERARCHY`), None without one."""
    reader = CityscapesDataset(root, split, cities)
    count = len(reader) if limit is None else min(limit, len(reader))
    order = sorted(range(len(reader)), key=lambda i: reader.sample_ids[i])[:count]
    names = hierarchy

    def gen():
        nonlocal names
        for i in order:
            sample = reader[i]
            signs = None
            sidecar = sidecar_path(Path(sample.label_path))
            if sidecar.is_file():
                names = names or load_hierarchy(DEFAULT_HIERARCHY)
                signs, size = read_sidecar(sidecar, names)
                if size != sample.label.shape[:2]:
                    raise ValueError(
                        f"{sidecar}: for a {size[1]}x{size[0]} image, the labels are "
                        f"{sample.label.shape[1]}x{sample.label.shape[0]}"
                    )
            yield sample.image, sample.label, signs

    return count, gen()


def write_cityscapes_bag(
    root: Path | str,
    out: Path | str,
    split: str = "val",
    cities: Sequence[str] | None = None,
    limit: int | None = None,
    hierarchy: Hierarchy | None = None,
    **kwargs: Any,
) -> WriteSummary:
    """A Cityscapes-format split (leftImg8bit + gtFine labelIds [+ signs sidecars]) as a bag; see
    :func:`write_bag` and :func:`cityscapes_frames`."""
    count, frames = cityscapes_frames(root, split, cities, limit, hierarchy)
    if count == 0:
        raise ValueError(f"{root}: Cityscapes split {split!r} has no samples")
    return write_bag(out, frames, total=count, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluation.bags.write", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="Cityscapes-format folder (leftImg8bit/, gtFine/)")
    ap.add_argument("out", type=Path, help="bag folder to create")
    ap.add_argument("--split", default="val")
    ap.add_argument("--city", action="append", dest="cities", help="only this city (repeatable)")
    ap.add_argument("--limit", type=int, help="at most this many frames")
    ap.add_argument("--storage", choices=STORAGES, default="sqlite3")
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second (stamps and bag times)")
    ap.add_argument("--format", choices=FORMATS, default="raw", help="raw = Image rgb8, else CompressedImage")
    ap.add_argument("--jpeg-quality", type=int, default=90)
    ap.add_argument("--camera-topic", default=DEFAULT_CAMERA_TOPIC)
    ap.add_argument("--label-topic", default=DEFAULT_LABEL_TOPIC, help="ground-truth topic ('' = none)")
    ap.add_argument("--sign-topic", default=DEFAULT_SIGN_TOPIC, help="sign ground-truth topic ('' = none)")
    ap.add_argument("--hierarchy", type=Path, default=DEFAULT_HIERARCHY, help="names of the sign classes")
    ap.add_argument("--frame-id", default="camera")
    ap.add_argument("--start-ns", type=int, help="stamp of the first frame (default: now)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        summary = write_cityscapes_bag(
            args.root,
            args.out,
            args.split,
            args.cities,
            args.limit,
            load_hierarchy(args.hierarchy),
            rate_hz=args.rate,
            storage=args.storage,
            camera_topic=args.camera_topic,
            label_topic=args.label_topic or None,
            sign_topic=args.sign_topic or None,
            frame_id=args.frame_id,
            image_format=args.format,
            jpeg_quality=args.jpeg_quality,
            start_ns=args.start_ns,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (ValueError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary.path} ({summary.storage}): {summary.frames} frames {summary.width}x{summary.height} "
        f"at {summary.rate_hz:g} Hz on {summary.camera_topic}"
        + (f" + {summary.label_topic}" if summary.label_topic else "")
        + (f" + {summary.sign_topic} ({summary.sign_frames} frames)" if summary.sign_topic else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
