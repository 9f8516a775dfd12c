"""The unknown-key check of the small config dataclasses' ``from_dict`` parsers (pseudo-label
stages, generator settings, target options): a misspelt key must be an error naming it, never a
silent fall-back to the default. (The training config file has its own, file-and-path-prefixed
messages in :mod:`training.fit.config`.)"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def reject_unknown_keys(where: str, data: Mapping[str, Any], expected: Iterable[str]) -> None:
    """ValueError ``"<where>: unknown keys [...] (expected a, b)"`` if ``data`` has a key not in ``expected``."""
    expected = list(expected)
    unknown = sorted(set(data) - set(expected))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (expected {', '.join(expected)})")
