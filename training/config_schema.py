"""YAML configs into frozen dataclasses: ``base:`` inheritance, typed fields, the one unknown-key check.

Every problem is a :class:`ConfigError` whose message starts with the file (when there is one) and
the dotted key (``default.yaml: loss.weights.traffic_sgn: ...``), so a typo never falls back to a
default silently and the user knows which line to fix. The training config
(:mod:`training.fit.config`) and the pseudo-label settings (:mod:`training.labels.pseudo_labels`)
parse through here.

``base: PATH`` (top level, relative to the file that names it) makes a file a variant of another:
:func:`load_with_bases` reads the chain of bases and merges each file over its base. Mappings merge
key by key down to ``depth`` levels (the training config's sections: ``model``, ``run``, ...);
below that, and for lists and scalars, the variant's value replaces the base's whole (so a variant's
``loss.weights`` is its whole weight table). :class:`ConfigSource` remembers which file wrote each
key, so an error in an inherited key names the file it is written in.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BASE_KEY = "base"


class ConfigError(ValueError):
    """An invalid config; the message names the file (when known) and the key."""


@dataclass(frozen=True)
class ConfigSource:
    """Where a config's keys were written: the file loaded and, per dotted key, the file of its value.

    ``origins`` holds the keys a :func:`load_with_bases` merge produced (empty: all from ``path``).
    """

    path: str = "<config>"
    origins: Mapping[str, str] = field(default_factory=dict)

    def file_of(self, key: str) -> str:
        """The file that wrote ``key``: its own entry, that of the nearest enclosing key
        (``datasets[2].name`` -> ``datasets``), or the one file all its sub-keys come from."""
        cuts = [i for i, ch in enumerate(key) if ch in ".["] + [len(key)]
        for end in reversed(cuts):
            if key[:end] in self.origins:
                return self.origins[key[:end]]
        below = {f for k, f in self.origins.items() if k.startswith(f"{key}.")} if key else set()
        return below.pop() if len(below) == 1 else self.path

    def error(self, key: str, message: str) -> ConfigError:
        """``FILE: KEY: message``, FILE being the file that wrote the key (see :meth:`file_of`)."""
        file = self.file_of(key)
        via = "" if file == self.path else f" (inherited by {self.path})"
        return ConfigError(f"{file}: {key}: {message}{via}" if key else f"{file}: {message}{via}")


# --------------------------------------------------------------------------- the unknown-key check
def reject_unknown_keys(
    where: str, data: Mapping[str, Any], expected: Iterable[str], source: ConfigSource | None = None
) -> None:
    """ConfigError ``"[FILE: ]WHERE.KEY: unknown key (expected one of a, b)"`` at the first key of
    ``data`` (sorted) not in ``expected``; ``where`` is the dotted key of ``data`` ('' = top level)."""
    expected = list(expected)
    unknown = sorted(str(k) for k in data if k not in expected)
    if not unknown:
        return
    key = f"{where}.{unknown[0]}" if where else unknown[0]
    message = f"unknown key (expected one of {', '.join(expected)})"
    if source is None:
        raise ConfigError(f"{key}: {message}")
    raise source.error(key, message)


# --------------------------------------------------------------------------- typed dataclass fields
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        element = _type_name(args[0]).removeprefix("an ").removeprefix("a ")
        return f"a list of {count}{element}s"
    if origin is typing.Literal:
        return f"one of {list(typing.get_args(tp))}"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", dict: "a mapping"}.get(
        tp, str(tp)
    )


class _TypeMismatchError(Exception):
    """``value`` does not have type ``tp`` (turned into a ConfigError naming the key by :func:`convert`)."""


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(arg, value)
            except _TypeMismatchError:
                continue
    elif origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
    elif tp is type(None):
        if value is None:
            return None
    elif origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, list | tuple) and args[-1] is Ellipsis:  # tuple[T, ...]: any length
            return tuple(_convert(args[0], v) for v in value)
        if isinstance(value, list | tuple) and len(value) == len(args):
            return tuple(_convert(a, v) for a, v in zip(args, value, strict=True))
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict and isinstance(value, dict):
        return dict(value)
    raise _TypeMismatchError


def convert(tp: Any, value: Any, key: str, source: ConfigSource) -> Any:
    """``value`` as type ``tp`` (YAML lists become tuples, integers floats); ConfigError naming ``key``."""
    try:
        return _convert(tp, value)
    except _TypeMismatchError:
        raise source.error(key, f"expected {_type_name(tp)}, got {value!r}") from None


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def parse_dataclass(
    cls: type, raw: Any, where: str, source: ConfigSource, required: Mapping[str, str] | None = None
) -> Any:
    """``cls`` from the mapping ``raw`` at dotted key ``where`` (null = all defaults).

    Keys are the dataclass fields, typed by its annotations; ``required`` maps the keys that have no
    default to what they are (for the message). A ValueError of the dataclass's own checks
    (``__post_init__``) becomes a ConfigError; one that starts with a key below ``where``
    (``augment.crop: ...``) names that key.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise source.error(where, f"expected a mapping, got {raw!r}")
    names = field_names(cls)
    reject_unknown_keys(where, raw, names, source)
    for key, what in (required or {}).items():
        if key not in raw:
            raise source.error(f"{where}.{key}", f"missing required key ({what})" if what else "missing required key")
    hints = typing.get_type_hints(cls)
    values = {k: convert(hints[k], v, f"{where}.{k}", source) for k, v in raw.items()}
    try:
        return cls(**values)
    except ValueError as exc:
        key, sep, message = str(exc).partition(": ")
        if sep and key.startswith(f"{where}.") and " " not in key:
            raise source.error(key, message) from exc
        raise source.error(where, str(exc)) from exc


# --------------------------------------------------------------------------- files and base: inheritance
def read_mapping(path: Path) -> dict:
    """The top-level mapping of the YAML file ``path`` (ConfigError naming the file otherwise)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def load_with_bases(path: str | Path, depth: int) -> tuple[dict, ConfigSource]:
    """The mapping in ``path`` merged over its ``base:`` chain (``base`` removed), and where each key came from.

    A missing base file and a cycle of bases are ConfigErrors naming the file and its ``base`` key.
    """
    path = Path(path)
    origins: dict[str, str] = {}
    raw = _load_chain(path, depth, origins, ())
    return raw, ConfigSource(str(path), origins)


def _load_chain(path: Path, depth: int, origins: dict[str, str], chain: tuple[Path, ...]) -> dict:
    raw = read_mapping(path)
    if BASE_KEY not in raw:
        origins.update(_leaves(raw, str(path), depth, ""))
        return raw
    raw = dict(raw)
    base = raw.pop(BASE_KEY)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {BASE_KEY}: expected the path of the base config (relative to this file)")
    base_path = path.parent / base
    if base_path.resolve() in (*chain, path.resolve()):
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve(), base_path.resolve()))
        raise ConfigError(f"{path}: {BASE_KEY}: {base!r} makes a cycle of bases ({cycle})")
    if not base_path.is_file():
        raise ConfigError(f"{path}: {BASE_KEY}: no such file {base_path}")
    merged = _load_chain(base_path, depth, origins, (*chain, path.resolve()))
    return _merge(merged, raw, str(path), depth, origins, "")


def _leaves(mapping: Mapping, file: str, depth: int, prefix: str) -> dict[str, str]:
    """dotted key -> ``file`` for each key of ``mapping`` a merge of ``depth`` levels treats as one value."""
    out: dict[str, str] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if depth > 1 and isinstance(value, dict) and value:
            out.update(_leaves(value, file, depth - 1, f"{dotted}."))
        else:
            out[dotted] = file
    return out


def _merge(base: dict, over: Mapping, file: str, depth: int, origins: dict[str, str], prefix: str) -> dict:
    out = dict(base)
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        origins.pop(dotted, None)
        if depth > 1 and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, file, depth - 1, origins, f"{dotted}.")
            if not value and not out[key]:
                origins[dotted] = file
            continue
        out[key] = value
        for stale in [k for k in origins if k.startswith(f"{dotted}.")]:
            del origins[stale]
        origins.update(_leaves({key: value}, file, depth, prefix))
    return out
