"""How much of what is rare the training crops hold: plain random crops vs the config's crop sampling.

Counts, not timings: per GTSDB crop the share holding a sign, the signs and the box pixels; per
Cityscapes / Vistas crop the share of traffic-sign pixels (native ids the hierarchy maps to
``traffic-sign`` or below). Crops are drawn exactly as training draws them (the config's augment
section and each dataset's ``crops`` entry, :class:`training.data.crops.CropSampler`)::

    .venv/bin/python -m bench.measure_crops --preset small --crops 400
    .venv/bin/python -m bench.measure_crops --data data/synthetic --crops 400   # an existing set
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from training import REPO
from training.data.crops import CropConfig, CropSampler, centre_ids
from training.data.readers import load_dataset
from training.fit.config import load_config


def measure(config_path: Path, data: Path, crops: int) -> list[str]:
    config, hierarchy = load_config(config_path, check_data=False)
    rows = ["| dataset | crops | share with a sign | signs / crop | sign pixels / crop | sign pixel share |"]
    rows.append("|---|---|---|---|---|---|")
    for ds in config.datasets:
        supervision = hierarchy.dataset(ds.name).supervision
        if supervision == "tags":
            continue
        reader = load_dataset(ds.name, data / ds.root, **ds.options)
        signs = centre_ids(hierarchy, ds.name, ["traffic-sign"]) if supervision == "pixel" else frozenset()
        for name, crop_config in (("plain", CropConfig()), ("configured", ds.crops)):
            sampler = CropSampler.for_dataset(crop_config, config.augment, hierarchy, ds.name)
            with_sign, count, pixels, total = 0, 0, 0, 0
            for n in range(crops):
                crop = sampler.draw(reader, n % len(reader), np.random.default_rng([n, 0xC0]))
                total += crop.size[0] * crop.size[1]
                if supervision == "boxes":
                    boxes = crop.boxes()
                    area = sum((b.x1 - b.x0 + 1) * (b.y1 - b.y0 + 1) for b in boxes)
                    count += len(boxes)
                else:
                    maps = [{"label": t.sample.label} for t in crop.tiles]
                    label = crop.warp_maps(maps, 255)["label"]
                    area = int(np.isin(label, list(signs)).sum())
                with_sign += area > 0
                pixels += area
            signs_per_crop = f"{count / crops:.2f}" if supervision == "boxes" else "-"
            rows.append(
                f"| {ds.name} ({name}) | {crops} | {100 * with_sign / crops:.0f} % | {signs_per_crop} | "
                f"{pixels / crops:.0f} | {100 * pixels / total:.2f} % |"
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "config" / "training" / "default.yaml")
    ap.add_argument("--data", type=Path, help="an existing synthetic set (default: write --preset to a temp dir)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--crops", type=int, default=400)
    args = ap.parse_args()
    if args.data is not None:
        print("\n".join(measure(args.config, args.data, args.crops)))
        return
    from training.data.synthetic.generate import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, args.preset, seed=0, only=["cityscapes", "vistas", "gtsdb"])
        print("\n".join(measure(args.config, Path(tmp), args.crops)))


if __name__ == "__main__":
    main()
