"""``hierarchy_info``: print what a hierarchy YAML file contains, or the compact JSON that models embed.

Lets a user check a hierarchy edit (classifiers, leaves, dataset mappings) without starting the
node or training anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hiseg_ros.hierarchy import Hierarchy, HierarchyError, load_hierarchy


def describe(h: Hierarchy) -> str:
    """A human-readable summary: classifiers with their classes, leaves, dataset mappings."""
    lines = [f"hierarchy {h.name}: {h.description}".rstrip(": ")]
    lines.append(f"  {len(h.classes)} classes, {len(h.leaves)} leaves, leaf map dtype {h.mask_dtype.__name__}")
    for clf in h.classifiers:
        owner = "" if clf.node == "root" else f" (under {clf.node})"
        lines.append(f"  classifier {clf.name}{owner}: {clf.num_classes} classes")
        lines.append("    " + ", ".join(clf.classes))
    for ds in h.datasets.values():
        mapped = sum(1 for v in ds.ids.values() if v is not None)
        ev = f", evaluation over {len(ds.evaluation.classes)} classes" if ds.evaluation else ""
        lines.append(f"  dataset {ds.name} ({ds.supervision}): {mapped}/{len(ds.ids)} ids mapped{ev}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hierarchy_info", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="hierarchy YAML file")
    parser.add_argument("--json", action="store_true", help="print the compact JSON embedded in models")
    args = parser.parse_args(argv)
    try:
        h = load_hierarchy(args.path)
    except HierarchyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(h.to_json() if args.json else describe(h))
    return 0


if __name__ == "__main__":
    sys.exit(main())
