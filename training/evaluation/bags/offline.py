"""Offline bag evaluation: ``hiseg_ros.engines`` on every camera frame, as fast as it can.

The outputs are what the node would publish for the frame (``hiseg_ros.outputs.render``, the
node's own function), written to the output bag under the node's topics.
"""

from __future__ import annotations

import time

import numpy as np

from hiseg_ros.engines import create_engine
from hiseg_ros.messages import NODE_NAME
from hiseg_ros.outputs import OUTPUTS, colorize, overlay, render, sign_leaf_lut

from .options import EvaluateOptions
from .output_bag import OutputBag, detections_cdr, output_topics
from .read import IMAGE, BagError, FrameReader
from .result import BagResult, OfflineDetails
from .run import RunState, SegmentationMetrics, finish, progress_bar, sample_indices
from .sign_scores import SIGN_RULE
from .vision_types import DETECTIONS, output_typestore
from .write import image_cdr


def run_offline(opts: EvaluateOptions, reader: FrameReader, state: RunState) -> BagResult:
    """Infer every frame of ``reader``; metrics, samples and the output bag go into ``state.folder``."""
    state.sign_rule = {name: getattr(opts, name) for name in SIGN_RULE}  # the options the detections use
    engine, why = create_engine(str(opts.model), backend=opts.backend)
    h = engine.hierarchy
    metrics = SegmentationMetrics(h, opts.dataset)
    store, has_vision = output_typestore()
    sign_lut = sign_leaf_lut(h, opts.sign_class) if opts.sign_class else None
    topics = output_topics(h, has_vision and sign_lut is not None)
    if not has_vision:
        state.notes.append("vision_msgs is not installed: no traffic_signs in the output bag")
    bag = OutputBag(state.folder / "bag", opts.storage(reader.info.storage), store) if opts.output_bag else None
    wanted_samples = sample_indices(len(reader), opts.samples)
    ns = f"/{NODE_NAME}"
    start = time.perf_counter()
    bar = progress_bar(len(reader), opts.progress, "offline")
    try:
        for frame in reader:
            t0 = time.perf_counter()
            dec = engine.infer(frame.rgb)
            state.latencies.append(1000.0 * (time.perf_counter() - t0))
            state.processed += 1
            state.with_outputs += 1
            if frame.label is not None:
                metrics.add_decisions(frame.label, dec.per_classifier)
                state.with_gt += 1
            else:
                state.without_gt += 1
            wanted = set(OUTPUTS if bag is not None else ("overlay",) if frame.index in wanted_samples else ())
            if frame.signs is not None and sign_lut is not None:
                wanted.add("traffic_signs")
            out = render(
                h,
                dec.per_classifier,
                dec.leaf,
                frame.rgb,
                wanted,
                sign_lut=sign_lut,
                min_sign_area=opts.min_sign_area,
                sign_split=opts.sign_split,
                overlay_alpha=opts.overlay_alpha,
            )
            if sign_lut is not None:
                state.add_signs(frame.signs, out.signs or [])
            if frame.index in wanted_samples:
                state.save_sample(frame.index, frame.stamp_ns, frame.rgb, out.overlay, h, dec.leaf)
            if state.wants_sign_figure(out.signs or []):
                over = out.overlay
                if over is None:
                    over = overlay(frame.rgb, colorize(h, dec.leaf), opts.overlay_alpha, out.signs, h.palette)
                state.save_sign_figure(frame.index, frame.stamp_ns, over, frame.signs, out.signs)
            if bag is not None:
                t, s, fid = frame.bag_time_ns, frame.stamp_ns, frame.frame_id
                bag.write(reader.info.camera_topic, frame.camera_msgtype, t, frame.camera_raw)
                if frame.label_raw is not None:
                    bag.write(reader.info.label_topic, IMAGE, frame.label_bag_time_ns or t, frame.label_raw)
                if frame.signs_raw is not None:
                    bag.write(reader.info.sign_topic, DETECTIONS, frame.signs_bag_time_ns or t, frame.signs_raw)
                for name, mask in out.masks.items():
                    bag.write(f"{ns}/{name}/mask", IMAGE, t, image_cdr(mask, "mono8", s, fid))
                leaf_encoding = "mono8" if out.leaf.dtype == np.uint8 else "mono16"
                bag.write(f"{ns}/mask", IMAGE, t, image_cdr(out.leaf, leaf_encoding, s, fid))
                bag.write(f"{ns}/colored", IMAGE, t, image_cdr(out.colored, "rgb8", s, fid))
                bag.write(f"{ns}/overlay", IMAGE, t, image_cdr(out.overlay, "rgb8", s, fid))
                if f"{ns}/traffic_signs" in topics:
                    bag.write(f"{ns}/traffic_signs", DETECTIONS, t, detections_cdr(store, out.signs, s, fid))
            bar.update()
    except BagError as exc:
        state.fail(str(exc))
    except ValueError as exc:  # label ids the hierarchy does not map, wrong shapes
        state.fail(f"bag {state.bag}, topic {state.label_topic}: {exc}")
    finally:
        bar.close()
        if bag is not None:
            bag.close()
    wall = time.perf_counter() - start
    return finish(
        state,
        metrics,
        fps=state.processed / wall if wall > 0 and state.processed else None,
        wall_seconds=wall,
        recorded_rate_hz=reader.info.rate_hz,
        output_bag=None if bag is None else "bag",
        output_topics=sorted(topics),
        details=OfflineDetails(getattr(engine, "name", type(engine).__name__), why),
    )
