"""``python -m training.labels.pseudo_labels {train-classifier, train-foreground, train-decoder, generate}``.

``generate`` writes one pseudo label per image of an image-level dataset into ``--out`` using
several worker processes: each file is written to a temporary name and renamed (a crash never
leaves half a label), images whose file already exists are skipped (resumable), and the settings
are recorded in ``--out/pseudo_labels.json`` (a rerun with different settings into the same folder
is refused instead of mixing two kinds of labels). Images that cannot be labelled (no tags, tags
unknown to the hierarchy, empty or undecodable images, a crashed worker) are logged, counted at the
end and listed in ``--out/skipped.json``; the exit code is 1 when any image has no label.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from training.labels.pseudo_labels.batch import SETTINGS_FILE, SKIPPED_FILE, generate_labels, split_ids
from training.labels.pseudo_labels.stages import OPT_IN_STAGES, REGION_MODES, STAGES

__all__ = ["SETTINGS_FILE", "SKIPPED_FILE", "build_parser", "generate_labels", "main", "settings_from_args"]


# --------------------------------------------------------------------------- training commands
def _load_split(dataset: str, root: Path, split: str | None, limit: int | None) -> list:
    from training.data.readers import load_dataset

    reader = (
        load_dataset(dataset, root)
        if split is None or dataset == "openscapes"
        else load_dataset(dataset, root, split=split)
    )
    wanted = split_ids(root, split) if dataset == "openscapes" else None
    samples = []
    for i, sid in enumerate(reader.sample_ids):
        if wanted is not None and sid not in wanted:
            continue
        samples.append(reader[i])
        if limit is not None and len(samples) >= limit:
            break
    return samples


def _train_config(args: argparse.Namespace) -> Any:
    from training.labels.pseudo_labels.classifier import TrainConfig

    return TrainConfig(
        input_size=tuple(args.input_size),
        batch_size=args.batch_size,
        iterations=args.iterations,
        lr=args.lr,
        freeze_blocks=args.freeze_blocks,
        seed=args.seed,
        pretrained=None if args.random_init else "default",
    )


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from hiseg_ros.hierarchy import load_hierarchy
    from training.labels.pseudo_labels.classifier import (
        hierarchy_tags,
        save_classifier,
        tag_node_space,
        train_classifier,
    )
    from training.labels.tags import tag_nodes

    hierarchy = load_hierarchy(args.hierarchy)
    samples = [s for s in _load_split("openscapes", Path(args.data), args.split, args.limit) if s.tags]
    nodes = tag_node_space(hierarchy, "openscapes")
    node_lists = [tag_nodes(hierarchy, "openscapes", s.tags) for s in samples]
    start = time.perf_counter()
    model = train_classifier([s.image for s in samples], node_lists, nodes, _train_config(args))
    model.tags = hierarchy_tags(hierarchy, "openscapes")  # lets other hierarchies use it (through the tag names)
    save_classifier(model, args.out)
    print(f"trained the tag classifier on {len(samples)} images in {time.perf_counter() - start:.0f} s -> {args.out}")
    return 0


def cmd_train_foreground(args: argparse.Namespace) -> int:
    from training.data.readers import load_dataset
    from training.labels.pseudo_labels.saliency import foreground_mask, save_foreground, train_foreground

    images, masks = [], []
    root = Path(args.data_root)
    for name, split in (("cityscapes", "train"), ("vistas", "training")):
        reader = load_dataset(name, root / name, split=split)
        for i in range(min(len(reader), args.limit)):
            s = reader[i]
            images.append(s.image)
            masks.append(foreground_mask(s, reader.class_names))
    start = time.perf_counter()
    model = train_foreground(images, masks, _train_config(args))
    save_foreground(model, args.out)
    seconds = time.perf_counter() - start
    print(f"trained the foreground segmenter on {len(images)} images in {seconds:.0f} s -> {args.out}")
    return 0


def cmd_train_decoder(args: argparse.Namespace) -> int:
    from hiseg_ros.hierarchy import load_hierarchy
    from training.data.readers import load_dataset
    from training.labels.pseudo_labels.attention_decoder import save_decoder, train_decoder, training_pairs
    from training.labels.pseudo_labels.generator import GeneratorConfig, load_tag_classifier

    hierarchy = load_hierarchy(args.hierarchy)
    settings = {"classifier": args.classifier, "stages": {"saliency": False, "erasing": False, "crf": False}}
    if args.classifier_hierarchy:
        settings["classifier_hierarchy"] = args.classifier_hierarchy
    classifier = load_tag_classifier(GeneratorConfig.from_dict(settings), hierarchy, "openscapes")
    config = _train_config(args)
    start = time.perf_counter()
    root = Path(args.data_root)
    images, pairs = [], []
    for name, split in (("cityscapes", "train"), ("vistas", "training")):
        reader = load_dataset(name, root / name, split=split)
        samples = (reader[i] for i in range(min(len(reader), args.limit)))
        more_images, more_pairs = training_pairs(samples, hierarchy, classifier, config.input_size, args.exclude)
        pairs += [replace(p, image=p.image + len(images)) for p in more_pairs]
        images += more_images
    nodes = sorted({p.node for p in pairs})
    print(
        f"{len(pairs)} attention / mask pairs of {len(images)} images, nodes {nodes}",
        f"({time.perf_counter() - start:.0f} s)",
    )
    if args.adversarial:
        from training.labels.pseudo_labels.adversarial import tag_pairs, train_decoder_adversarial

        if not args.tag_data:
            raise ValueError("--adversarial needs --tag-data (the tag images whose masks the critic judges)")
        tag_samples = _load_split("openscapes", Path(args.tag_data), args.tag_split, args.tag_limit)
        tag_images, unlabelled = tag_pairs(tag_samples, hierarchy, classifier, config.input_size)
        print(f"{len(unlabelled)} tag-image attention maps of {len(tag_images)} images")
        model, _ = train_decoder_adversarial(images, pairs, tag_images, unlabelled, config, args.adversarial)
    else:
        model = train_decoder(images, pairs, config)
    save_decoder(model, args.out, nodes, adversarial=args.adversarial)
    print(f"trained the attention decoder in {time.perf_counter() - start:.0f} s -> {args.out}")
    return 0


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Config file (YAML/JSON, :meth:`GeneratorConfig.from_dict` form) overridden by flags."""
    settings: dict[str, Any] = {}
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of generator settings")
        settings = loaded
    if args.classifier:
        settings["classifier"] = args.classifier
    if args.classifier_hierarchy:
        settings["classifier_hierarchy"] = args.classifier_hierarchy
    sal = dict(settings.get("saliency") or {})
    if args.saliency:
        sal["source"] = args.saliency
    if args.saliency_checkpoint:
        sal["checkpoint"] = args.saliency_checkpoint
    if sal:
        settings["saliency"] = sal
    if args.decoder_checkpoint:
        settings["decoder"] = {**(settings.get("decoder") or {}), "checkpoint": args.decoder_checkpoint}
    if args.decoder_unseen:
        settings["decoder"] = {**(settings.get("decoder") or {}), "unseen": args.decoder_unseen}
    if args.segmenter_checkpoint:
        settings["segmenter"] = {**(settings.get("segmenter") or {}), "checkpoint": args.segmenter_checkpoint}
    if args.segmenter_height:
        heights = args.segmenter_height[0] if len(args.segmenter_height) == 1 else args.segmenter_height
        settings["segmenter"] = {**(settings.get("segmenter") or {}), "height": heights}
    if args.segmenter_untaught:
        settings["segmenter"] = {**(settings.get("segmenter") or {}), "untaught": args.segmenter_untaught}
    if args.stages is not None:
        chosen = {s.strip() for s in args.stages.split(",") if s.strip()}
        bad = chosen - set(STAGES)
        if bad:
            raise ValueError(f"--stages: unknown stages {sorted(bad)} (choose from {', '.join(STAGES)})")
        settings["stages"] = {s: s in chosen for s in STAGES if s not in OPT_IN_STAGES or s in chosen}
    if args.regions:
        settings["regions"] = {**(settings.get("regions") or {}), "mode": args.regions}
    if args.nodes:
        settings["nodes"] = [n.strip() for n in args.nodes.split(",") if n.strip()]
    if args.output:
        settings["output"] = args.output
    for key in ("classifier", "classifier_hierarchy"):
        if settings.get(key):
            settings[key] = str(Path(settings[key]).resolve())
    for key in ("saliency", "decoder", "segmenter"):
        if (settings.get(key) or {}).get("checkpoint"):
            settings[key]["checkpoint"] = str(Path(settings[key]["checkpoint"]).resolve())
    return settings


def cmd_generate(args: argparse.Namespace) -> int:
    root = Path(args.data)
    report = generate_labels(
        args.dataset,
        root,
        Path(args.hierarchy),
        settings_from_args(args),
        Path(args.out),
        args.workers,
        split_ids(root, args.split),
        progress=not args.no_progress,
        limit=args.limit,
    )
    print(report.summary())
    return 1 if report.skipped else 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.labels.pseudo_labels", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def training_flags(p: argparse.ArgumentParser, iterations: int) -> None:
        p.add_argument("--out", required=True, help="checkpoint file to write")
        p.add_argument("--iterations", type=int, default=iterations)
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--input-size", type=int, nargs=2, default=[224, 288], metavar=("H", "W"))
        p.add_argument("--lr", type=float, default=0.01)
        p.add_argument("--freeze-blocks", type=int, default=14, help="leading backbone blocks kept at ImageNet weights")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--random-init", action="store_true", help="no ImageNet weights")

    p = sub.add_parser("train-classifier", help="multi-label tag classifier (Grad-CAM source)")
    p.add_argument("--data", required=True, help="OpenScapes-format root")
    p.add_argument("--split", default=None, help="synthetic split to train on (e.g. train); default all images")
    p.add_argument("--hierarchy", default="config/hierarchies/iv2018.yaml")
    p.add_argument("--limit", type=int, default=None)
    training_flags(p, 200)
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("train-foreground", help="class-agnostic foreground segmenter (learned saliency)")
    p.add_argument("--data-root", required=True, help="folder with cityscapes/ and vistas/")
    p.add_argument("--limit", type=int, default=120, help="images per dataset")
    training_flags(p, 200)
    p.set_defaults(func=cmd_train_foreground)

    p = sub.add_parser("train-decoder", help="class-conditioned attention decoder (Grad-CAM -> class mask)")
    p.add_argument("--data-root", required=True, help="folder with cityscapes/ and vistas/")
    p.add_argument("--classifier", required=True, help="tag classifier checkpoint (the attention source)")
    p.add_argument("--classifier-hierarchy", default=None, help="hierarchy the classifier was trained with")
    p.add_argument("--hierarchy", default="config/hierarchies/iv2018.yaml")
    p.add_argument("--limit", type=int, default=120, help="images per dataset")
    p.add_argument("--exclude", nargs="*", default=[], help="tag nodes held out of training (transfer tests)")
    p.add_argument(
        "--adversarial",
        type=float,
        default=0.0,
        help="P-Net adversarial term weight (0 = off; needs --tag-data)",
    )
    p.add_argument("--tag-data", default=None, help="OpenScapes-format root of the tag images (adversarial term)")
    p.add_argument("--tag-split", default="train")
    p.add_argument("--tag-limit", type=int, default=None)
    training_flags(p, 400)
    p.set_defaults(func=cmd_train_decoder, freeze_blocks=99)

    p = sub.add_parser("generate", help="pseudo labels for a whole image-level dataset")
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--dataset", default="openscapes")
    p.add_argument("--split", default=None, help="synthetic split (synthetic.json); default all images")
    p.add_argument("--hierarchy", default="config/hierarchies/iv2018.yaml")
    p.add_argument("--out", required=True, help="label folder (created; resumable)")
    p.add_argument("--config", default=None, help="YAML/JSON generator settings (GeneratorConfig.from_dict form)")
    p.add_argument("--classifier", default=None, help="tag classifier checkpoint")
    p.add_argument(
        "--classifier-hierarchy",
        default=None,
        help="hierarchy the classifier was trained with, when --hierarchy differs and its checkpoint records "
        "no tag map (outputs are matched through the tag names)",
    )
    p.add_argument("--saliency", default=None, help="learned | spectral_residual | fine_grained")
    p.add_argument("--saliency-checkpoint", default=None, help="foreground segmenter checkpoint (learned)")
    p.add_argument("--decoder-checkpoint", default=None, help="attention decoder checkpoint (decoder stage)")
    p.add_argument(
        "--decoder-unseen",
        choices=("decoder", "attention"),
        default=None,
        help="nodes the decoder was not trained on: its masks (default) or their Grad-CAM maps",
    )
    p.add_argument(
        "--segmenter-checkpoint", default=None, help="training checkpoint of a segmentation network (segmenter stage)"
    )
    p.add_argument(
        "--segmenter-height",
        type=int,
        nargs="+",
        default=None,
        help="segmenter input height(s): its training scale; several = multi-scale (probabilities averaged)",
    )
    p.add_argument(
        "--segmenter-untaught",
        choices=("vote", "attention"),
        default=None,
        help="classes no per-pixel set teaches: attention vote in the network's regions (default), or the "
        "attention pipeline's labels (with its stages on)",
    )
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)} ('' = CAM only)")
    p.add_argument("--regions", choices=REGION_MODES, default=None, help="regions stage mode (default maps)")
    p.add_argument("--nodes", default=None, help="comma-separated: label only these nodes (others void)")
    p.add_argument("--output", choices=("hard", "soft"), default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="only the first N selected images (trying settings)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_generate)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
