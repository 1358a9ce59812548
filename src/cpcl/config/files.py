"""Reading and writing configs: YAML files (with ``base`` chains), ``--set key=value`` overrides, the packaged
configs."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from cpcl.config.schema import Config, ConfigError


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to ``annotation``; raise ConfigError naming ``key`` on mismatch."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(annotation, value, key)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key(s): {', '.join(where + k for k in unknown)} "
            f"(valid here: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` -> ``("train.epochs", 3)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    return key, yaml.safe_load(raw) if raw.strip() else ""


def config_from_dict(values: dict[str, Any] | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a :class:`Config` from a nested mapping plus ``key=value`` overrides."""
    tree: dict[str, Any] = {}
    if values:
        tree = _merge({}, values)
    set_by = {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
        set_by[key] = text
    try:
        return _build(Config, tree)
    except ConfigError as exc:
        raise _from_override(exc, set_by) from None


def _from_override(exc: ConfigError, set_by: dict[str, str]) -> ConfigError:
    """``exc`` said against the ``--set`` that gave the faulty value, where one did (not the config file), with
    a hint where YAML read a value as a number or a boolean that was meant as text."""
    message = str(exc)
    named = {k: m.start() for k in set_by if (m := re.search(rf"(?<![\w.]){re.escape(k)}(?![\w.])", message))}
    if not named:
        return exc
    key = min(named, key=named.get)  # the key the message names first
    raw = set_by[key].split("=", 1)[1]
    hint = ""
    if "expected a string" in message:
        hint = f" (YAML reads {raw} as a value, not text: quote it, --set '{key}=\"{raw}\"')"
    out = type(exc)(f"--set {set_by[key]}: {message}{hint}")
    out.named_source = True
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif isinstance(v, dict):
            out[k] = _merge({}, v)
        else:
            out[k] = v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping (two ``train:`` sections, say) is an error
    naming the key and both lines, instead of the second silently replacing the first."""

    def construct_mapping(self, node, deep=False):
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first:
                raise ConfigError(f"the key {key!r} appears twice in one section (lines {first[key]} and {line}); "
                                  "keep one")
            first[key] = line
        return super().construct_mapping(node, deep)


def _read_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML file as a nested mapping; a top-level ``base: other.yaml`` (relative to the file) is read
    first and this file's keys override it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        loaded = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    tree = dict(loaded or {})
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file name")
    return _merge(_read_tree(path.parent / base, (*seen, path)), tree)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML experiment file (or defaults when ``path`` is None) and apply overrides."""
    values = _read_tree(Path(path)) if path is not None else {}
    try:
        return config_from_dict(values, overrides)
    except ConfigError as exc:
        if getattr(exc, "named_source", False) or path is None:  # a --set value: said against the --set
            raise
        raise type(exc)(f"{path}: {exc}") from None


def config_yaml(config: Config) -> str:
    """``config`` as the YAML that :func:`load_config` reads back to the same config."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(config_yaml(config))


PACKAGED_CONFIG_DIR = Path(__file__).parent.parent / "configs"


def packaged_configs() -> dict[str, Path]:
    """The experiment configs shipped with cpcl, by name (``cpcl configs`` lists them)."""
    return {path.stem: path for path in sorted(PACKAGED_CONFIG_DIR.glob("*.yaml"))}


def config_description(path: str | Path) -> str:
    """The leading comment block of a config file, as one line of text."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return " ".join(lines)


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or the name of a config shipped with cpcl."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = packaged_configs().get(Path(str(name)).name.removesuffix(".yaml"))
    if packaged is not None and path.parent == Path("."):
        return packaged
    raise ConfigError(f"config {str(name)!r} is neither a file nor a packaged config "
                      f"({', '.join(packaged_configs())})")
