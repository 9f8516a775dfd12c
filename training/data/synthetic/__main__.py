"""python -m training.data.synthetic --out DIR [--preset small|large] [--seed N] [--workers N] [--only a,b]
[--absent-vehicles P]"""

from __future__ import annotations

import argparse
import sys

from .generate import DATASETS, PRESETS, generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.data.synthetic",
        description="Write procedural street scenes as Cityscapes, Mapillary Vistas v1.2, GTSDB and "
        "OpenScapes-style datasets (deterministic by seed).",
    )
    ap.add_argument("--out", required=True, help="output folder; datasets go to OUT/<dataset>")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="worker processes (1 = render in this process)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(DATASETS)}")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the preset image sizes")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument(
        "--absent-vehicles",
        type=float,
        default=0.0,
        metavar="P",
        help="openscapes only (opt-in): leave each of car / truck / bus out of an image with "
        "probability P, so the vehicle tags are absent from a share of the images (default 0: as always)",
    )
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    try:
        summary = generate(args.out, args.preset, args.seed, args.workers, only, args.scale,
                           progress=not args.no_progress and args.preset != "small",
                           absent_vehicles=args.absent_vehicles)  # fmt: skip
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
