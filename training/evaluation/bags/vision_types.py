"""``vision_msgs`` for the bag tools: its message definitions read from the installed package's ``.msg`` files.

``vision_msgs`` is not in the rosbags Kilted store, so the output bag (the node's ``~/traffic_signs``),
the drive bag's sign ground truth and the reader register it from its ``.msg`` files; without the
package there is no ``Detection2DArray`` and the tools leave the sign topics out.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Any

from rosbags.typesys import Stores, get_types_from_msg, get_typestore

DETECTIONS = "vision_msgs/msg/Detection2DArray"


def _vision_msg_dir() -> Path | None:
    try:  # ament_index finds an installed ROS package; without it, look in this environment's share/
        from ament_index_python.packages import get_package_share_directory

        candidates = [Path(get_package_share_directory("vision_msgs")) / "msg"]
    except Exception:  # ament_index missing, or the package not registered
        candidates = []
    candidates.append(Path(sys.prefix) / "share" / "vision_msgs" / "msg")
    return next((c for c in candidates if (c / "Detection2DArray.msg").is_file()), None)


def output_typestore() -> tuple[Any, bool]:
    """A new Kilted type store plus vision_msgs (from its .msg files) when installed; (store, has_vision)."""
    store = get_typestore(Stores.ROS2_KILTED)
    folder = _vision_msg_dir()
    if folder is None:
        return store, False
    types: dict[str, Any] = {}
    for path in sorted(folder.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store, DETECTIONS in store.fielddefs


@cache
def vision_typestore() -> tuple[Any, bool]:
    """One shared :func:`output_typestore` for reading and writing sign messages (building it parses files)."""
    return output_typestore()
