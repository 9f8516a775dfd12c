"""Measure pseudo labels from image-level tags against the known truth of held-out synthetic scenes.

Options: ``python bench/measure_pseudo_labels.py --help``; the measured run and its command are in
docs/RESULTS_WEAK_LABELS.md.

Variants (one pass per image; the attention and saliency maps are shared between variants):
uniform tiling (IV 2019 baseline: 1/n of every tag class on every pixel, scored as fractional
counts), CAM only, CAM + saliency (Algorithm 1), + erasing, + CRF, each with every saliency source
(the learned one only with ``--foreground``), and the region step (superpixels,
``training/labels/pseudo_labels/regions.py``): ``regions[maps]`` = maps averaged per superpixel before
Algorithm 1 (with and without the CRF after it), ``regions[vote]`` = each superpixel's majority label
after the CRF, ``components`` = one class (highest mean attention) per connected foreground region,
after Algorithm 1 + erasing and after the CRF, ``regions[diffusion]`` = per-superpixel attention
diffused over the superpixel graph (colour + that source's saliency) before Algorithm 1, with and
without the CRF after it. With ``--decoder``: the same steps on the class masks of the attention
decoder (``attention_decoder.py``, TransferNet-style) instead of the Grad-CAM maps; ``decoder`` alone
= each pixel's most probable class where its probability is at least 0.5. With ``--segmenter``
(a training checkpoint for ``--hierarchy``): ``segmenter`` = the network's decisions constrained by
the image's tags (``segmenter.py``, the generator's ``segmenter`` stage), ``segmenter, no tags`` = the
same network's decisions over every tag class, unconstrained (what the tags add).
Classes = the nodes the dataset's tags map to + background; truth per pixel = the most specific
of the image's tag nodes that is the pixel's true class or an ancestor of it (Vistas v1.2 ids from
``ground_truth/{id}_vistas.png``; front signs refined by the GTSDB class in ``{id}_signs.png``), else
background. Then ``generate`` (the real command, several workers) is timed for throughput.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hiseg_ros.hierarchy import Hierarchy, load_hierarchy  # noqa: E402
from training.data.readers import load_dataset  # noqa: E402
from training.data.readers.base import read_index_png  # noqa: E402
from training.evaluation.metrics import ConfusionMatrix  # noqa: E402
from training.labels.pseudo_labels.algorithm1 import Algorithm1Config, algorithm1, cam_only_labels  # noqa: E402
from training.labels.pseudo_labels.attention_decoder import load_decoder  # noqa: E402
from training.labels.pseudo_labels.batch import generate_labels, split_ids  # noqa: E402
from training.labels.pseudo_labels.classifier import load_classifier, tag_node_space  # noqa: E402
from training.labels.pseudo_labels.crf import CRFConfig, crf_refine  # noqa: E402
from training.labels.pseudo_labels.erasing import ErasingConfig, iterative_saliency  # noqa: E402
from training.labels.pseudo_labels.generator import work_size  # noqa: E402
from training.labels.pseudo_labels.regions import (  # noqa: E402
    RegionConfig,
    component_classes,
    diffuse_classes,
    region_mean,
    region_vote,
    superpixels,
)
from training.labels.pseudo_labels.saliency import LearnedSaliency, OpenCVSaliency, load_foreground  # noqa: E402
from training.labels.pseudo_labels.segmenter import (  # noqa: E402
    Segmenter,
    SegmenterConfig,
    tag_constrained_labels,
    taggable_nodes,
)
from training.labels.tags import tag_nodes  # noqa: E402

DECODER_THRESHOLD = 0.5  # a decoder mask is a probability: "the class is here" above one half
SCALE = 840  # fractional uniform-tiling counts (1/n, n <= 8) become integers


def truth_nodes(hierarchy: Hierarchy, root: Path, sample_id: str) -> np.ndarray:
    """H x W object array of true hierarchy node names (None = unlabeled)."""
    vistas = read_index_png(root / "ground_truth" / f"{sample_id}_vistas.png")
    signs = cv2.imread(str(root / "ground_truth" / f"{sample_id}_signs.png"), cv2.IMREAD_UNCHANGED)
    v_ids, g_ids = hierarchy.dataset("vistas").ids, hierarchy.dataset("gtsdb").ids
    v_lut = np.array([v_ids.get(i) for i in range(256)], dtype=object)
    out = v_lut[vistas]
    front = signs != 255
    if front.any():
        g_lut = np.array([g_ids.get(i) for i in range(256)], dtype=object)
        out[front] = g_lut[signs[front]]
    return out


def truth_map(hierarchy: Hierarchy, nodes_true: np.ndarray, present: tuple[str, ...], classes: list[str]) -> np.ndarray:
    """Class index per pixel (len(classes) - 1 = background), restricted to the image's tag nodes."""
    bg = len(classes) - 1
    lut = {}
    for name in set(nodes_true.ravel().tolist()):
        best = bg
        if name is not None:
            chain = [name, *hierarchy.ancestors(name)]  # most specific first
            for n in chain:
                if n in present:
                    best = classes.index(n)
                    break
        lut[name] = best
    return np.vectorize(lut.__getitem__, otypes=[np.int64])(nodes_true)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/synthetic/openscapes")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--hierarchy", default="config/hierarchies/iv2018.yaml")
    ap.add_argument("--classifier", default=None, help="tag classifier checkpoint (required but with --only-segmenter)")
    ap.add_argument(
        "--only-segmenter",
        action="store_true",
        help="only the uniform and segmenter rows (the tag classifier, if given, only for untaught classes)",
    )
    ap.add_argument("--foreground", default=None, help="learned saliency checkpoint (without: OpenCV sources only)")
    ap.add_argument("--decoder", default=None, help="attention decoder checkpoint (adds the decoder rows)")
    ap.add_argument("--segmenter", default=None, help="training checkpoint (adds the segmenter rows)")
    ap.add_argument(
        "--segmenter-height", type=int, nargs="+", default=list(SegmenterConfig().heights), help="its input height(s)"
    )
    ap.add_argument("--region-size", type=int, default=RegionConfig().region_size, help="superpixel side, work px")
    ap.add_argument(
        "--results", default=None, help="also record the ablation in this headline JSON (docs/results/weak_labels.json)"
    )
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--work-max-side", type=int, default=320)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--out", default=None, help="JSON results file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    hierarchy = load_hierarchy(args.hierarchy)
    reader = load_dataset("openscapes", root)
    wanted = split_ids(root, args.split)
    indices = [i for i, s in enumerate(reader.sample_ids) if wanted is None or s in wanted][: args.limit]
    classes = [*tag_node_space(hierarchy, "openscapes"), "background"]
    bg = len(classes) - 1
    if args.classifier is None and not args.only_segmenter:
        ap.error("--classifier is required (except with --only-segmenter)")
    if args.only_segmenter and not args.segmenter:
        ap.error("--only-segmenter needs --segmenter")
    classifier = load_classifier(args.classifier) if args.classifier else None
    sources = {"learned": LearnedSaliency(load_foreground(args.foreground))} if args.foreground else {}
    sources |= {
        "spectral_residual": OpenCVSaliency("spectral_residual"),
        "fine_grained": OpenCVSaliency("fine_grained"),
    }
    decoder = load_decoder(args.decoder) if args.decoder else None
    segmenter = None
    if args.segmenter:
        segmenter = Segmenter(SegmenterConfig(args.segmenter, tuple(args.segmenter_height)), hierarchy)
    every_tag = tuple(classes[:-1])
    taggable = taggable_nodes(hierarchy, "openscapes")
    algo, erasing, crf_cfg = Algorithm1Config(), ErasingConfig(), CRFConfig()
    region_cfg = RegionConfig(region_size=args.region_size)
    diffusion_cfg = RegionConfig(mode="diffusion", region_size=args.region_size)
    matrices: dict[str, ConfusionMatrix] = defaultdict(lambda: ConfusionMatrix(len(classes), ignore_index=-100))
    seconds: dict[str, float] = defaultdict(float)
    uniform = np.zeros((len(classes), len(classes) + 1), np.int64)
    n_images = 0
    for i in indices:
        sample = reader[i]
        present = tag_nodes(hierarchy, "openscapes", sample.tags)
        if not present:
            continue
        n_images += 1
        h, w = sample.image.shape[:2]
        truth = truth_map(hierarchy, truth_nodes(hierarchy, root, sample.sample_id), present, classes)
        col = np.array([classes.index(n) for n in present] + [bg])

        def score(name: str, labels: np.ndarray, col=col, truth=truth, w=w, h=h) -> None:
            full = cv2.resize(labels.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
            matrices[name].update(truth, col[full])  # -1 (background) -> last entry of col

        # uniform tiling: every pixel carries 1/n of each present class (never background)
        counts = np.bincount(truth.ravel(), minlength=len(classes))
        for c in col[:-1]:
            uniform[:, c] += counts * (SCALE // len(present))
        t = time.perf_counter()
        size = work_size((h, w), args.work_max_side)
        small = cv2.resize(sample.image, (size[1], size[0]), interpolation=cv2.INTER_AREA)

        def attention(small=small, present=present, size=size) -> np.ndarray:
            if classifier is None:
                raise ValueError("an untaught tag class needs the tag classifier's attention: give --classifier")
            return classifier.attention(small, present, size)

        if segmenter is not None:
            t = time.perf_counter()
            probs = segmenter.probabilities(sample.image, size)
            labels = tag_constrained_labels(hierarchy, probs, present, segmenter.taught, attention, taggable=taggable)
            seconds["segmenter"] += time.perf_counter() - t
            score("segmenter", labels)
            free = tag_constrained_labels(hierarchy, probs, every_tag, segmenter.taught, complete=False)
            full = cv2.resize(free, (w, h), interpolation=cv2.INTER_NEAREST)
            matrices["segmenter, no tags"].update(truth, np.append(np.arange(len(every_tag)), bg)[full])
        if args.only_segmenter:
            print(f"\r{n_images}/{len(indices)} images", end="", file=sys.stderr, flush=True)
            continue
        t = time.perf_counter()
        cams = attention()
        seconds["gradcam"] += time.perf_counter() - t
        score("cam_only", cam_only_labels(cams, algo.gamma1))
        if decoder is not None:
            t = time.perf_counter()
            dec = decoder.masks(small, cams)
            seconds["decoder"] += time.perf_counter() - t
            score("decoder", cam_only_labels(dec, DECODER_THRESHOLD))
        t = time.perf_counter()
        regions = superpixels(small, region_cfg)
        cams_r = region_mean(cams, regions)
        seconds["superpixels"] += time.perf_counter() - t
        for name, source in sources.items():
            t = time.perf_counter()
            sal_once = source(small)
            seconds[f"saliency_{name}"] += time.perf_counter() - t
            score(f"cam+sal[{name}]", algorithm1(cams, sal_once, algo))
            t = time.perf_counter()
            sal, _ = iterative_saliency(small, source, erasing)
            seconds[f"saliency+erasing_{name}"] += time.perf_counter() - t
            erased_labels = algorithm1(cams, sal, algo)
            score(f"cam+sal+erase[{name}]", erased_labels)
            score(f"cam+sal+erase+components[{name}]", component_classes(erased_labels, cams))
            t = time.perf_counter()
            crf_labels = crf_refine(small, cams, sal, algo, crf_cfg)
            seconds[f"crf_{name}"] += time.perf_counter() - t
            score(f"cam+sal+erase+crf[{name}]", crf_labels)
            score(f"cam+sal+erase+crf+regions[vote][{name}]", region_vote(crf_labels, regions))
            score(f"cam+sal+erase+crf+components[{name}]", component_classes(crf_labels, cams))
            sal_r = region_mean(sal, regions)
            score(f"cam+sal+erase+regions[maps][{name}]", algorithm1(cams_r, sal_r, algo))
            score(f"cam+sal+erase+regions[maps]+crf[{name}]", crf_refine(small, cams_r, sal_r, algo, crf_cfg))
            t = time.perf_counter()
            cams_d = diffuse_classes(small, cams, regions, sal, diffusion_cfg)
            seconds[f"diffusion_{name}"] += time.perf_counter() - t
            score(f"cam+sal+erase+regions[diffusion][{name}]", algorithm1(cams_d, sal_r, algo))
            score(f"cam+sal+erase+regions[diffusion]+crf[{name}]", crf_refine(small, cams_d, sal_r, algo, crf_cfg))
            if decoder is not None:
                score(f"decoder+sal+erase[{name}]", algorithm1(dec, sal, algo))
                score(f"decoder+sal+erase+crf[{name}]", crf_refine(small, dec, sal, algo, crf_cfg))
                dec_d = diffuse_classes(small, dec, regions, sal, diffusion_cfg)
                score(
                    f"decoder+sal+erase+regions[diffusion]+crf[{name}]", crf_refine(small, dec_d, sal_r, algo, crf_cfg)
                )
        print(f"\r{n_images}/{len(indices)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    results: dict = {
        "images": n_images,
        "classes": classes,
        "work_max_side": args.work_max_side,
        "region_size": args.region_size,
        "variants": {},
    }
    all_m = {"uniform_tiling": ConfusionMatrix(len(classes), ignore_index=-100, matrix=uniform), **matrices}
    for name, m in all_m.items():
        s = m.scores()
        results["variants"][name] = {
            "miou": round(100 * s.miou, 1),
            "iou": {
                c: (None if np.isnan(v) else round(100 * float(v), 1)) for c, v in zip(classes, s.iou, strict=True)
            },
        }
        print(f"{name:40s} mIoU {100 * s.miou:5.1f}")
    results["ms_per_image"] = {k: round(1000 * v / max(n_images, 1), 1) for k, v in seconds.items()}
    print("ms per image:", results["ms_per_image"])
    if not args.skip_throughput and not args.only_segmenter:
        for source in [s for s in ("learned", "spectral_residual") if s in sources]:
            with tempfile.TemporaryDirectory() as tmp:
                settings = {
                    "classifier": str(Path(args.classifier).resolve()),
                    "saliency": {"source": source, "checkpoint": str(Path(args.foreground).resolve())},
                    "work_max_side": args.work_max_side,
                }
                ids = {reader.sample_ids[i] for i in indices}
                report = generate_labels(
                    "openscapes", root, Path(args.hierarchy), settings, Path(tmp), args.workers, ids, progress=False
                )
            total = sum(report.timings.values())
            results[f"throughput_{source}"] = {
                "workers": args.workers,
                "images": report.done,
                "seconds": round(report.seconds, 1),
                "images_per_s": round(report.done / report.seconds, 2),
                "worker_ms_per_image": {k: round(1000 * v / max(report.done, 1), 1) for k, v in report.timings.items()},
                "share": {k: round(100 * v / total, 1) for k, v in report.timings.items()},
            }
            print(f"generate [{source}]:", report.summary())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if args.results:
        from training.jobs.weak_only import update_results

        command = "python bench/measure_pseudo_labels.py " + shlex.join(sys.argv[1:])
        update_results(Path(args.results), command, ablation_entry(results["variants"], next(iter(sources))))
    return 0


ABLATION_STEPS = {  # weak_labels.json step name -> variant name (of one saliency source)
    "uniform_tiling": "uniform_tiling",
    "cam_only": "cam_only",
    "cam+saliency": "cam+sal[{}]",
    "+erasing": "cam+sal+erase[{}]",
    "+crf": "cam+sal+erase+crf[{}]",
    "+crf+components": "cam+sal+erase+crf+components[{}]",
    "components instead of crf": "cam+sal+erase+components[{}]",
    "+regions_vote (after crf)": "cam+sal+erase+crf+regions[vote][{}]",
    "regions_maps instead of crf": "cam+sal+erase+regions[maps][{}]",
    "regions_maps + crf": "cam+sal+erase+regions[maps]+crf[{}]",
    "diffusion instead of crf": "cam+sal+erase+regions[diffusion][{}]",
    "diffusion + crf": "cam+sal+erase+regions[diffusion]+crf[{}]",
}
DECODER_STEPS = {  # measured with --decoder only
    "decoder (no saliency)": "decoder",
    "decoder + saliency + erasing": "decoder+sal+erase[{}]",
    "decoder + crf": "decoder+sal+erase+crf[{}]",
    "decoder + diffusion + crf": "decoder+sal+erase+regions[diffusion]+crf[{}]",
}


SEGMENTER_STEPS = {  # measured with --segmenter only
    "segmenter (network + tags)": "segmenter",
    "segmenter, no tags (network alone)": "segmenter, no tags",
}
NOT_FROM_TAGS = ("uniform_tiling", "segmenter, no tags (network alone)")  # no pseudo label made from the tags


def ablation_entry(variants: dict, source: str) -> dict:
    """``weak_labels.json`` keys of one measurement: the rows it measured (the attention rows with
    ``source``, the learned saliency when measured) and, as ``pseudo_label_miou``, its best pipeline
    made from the tags."""
    steps = {"uniform_tiling": "uniform_tiling"}
    if "cam_only" in variants:
        steps |= ABLATION_STEPS
    if "decoder" in variants:
        steps |= DECODER_STEPS
    if "segmenter" in variants:
        steps |= SEGMENTER_STEPS
    ablation = {step: variants[name.format(source)]["miou"] for step, name in steps.items()}
    from_tags = {k: v for k, v in ablation.items() if k not in NOT_FROM_TAGS}
    best = max(from_tags, key=from_tags.__getitem__)
    uses_saliency = "{}" in steps[best]
    return {
        "pseudo_label_miou": from_tags[best],
        "pseudo_label_pipeline": f"{best} ({source} saliency)" if uses_saliency else best,
        "ablation": ablation,
        **({"ablation_saliency": source} if "cam_only" in variants else {}),
    }


if __name__ == "__main__":
    sys.exit(main())
