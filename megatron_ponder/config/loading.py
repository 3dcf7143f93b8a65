"""Loading: YAML recipes (with their bases) and dotted overrides in, a validated Config out;
and the plain mapping a Config is written as (config.yaml, checkpoints, records)."""

from __future__ import annotations

import copy
import dataclasses
import enum
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from megatron_ponder.config.checks import ConfigError
from megatron_ponder.config.root import Config

_SCIENTIFIC = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check a YAML value against a dataclass field's type; ints are accepted as floats."""
    hint = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if hint in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, name)
    if hint is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} has the wrong type: expected a list")
        return [_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum):
        return _choice(value, annotation, name)
    if annotation in (int, float, str, bool):
        if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
            raise ConfigError(f"{name}={value!r} has the wrong type: expected {annotation.__name__}")
        return value
    raise TypeError(f"unsupported annotation {annotation} for {name}")


def _choice(value: Any, choice: type[enum.StrEnum], name: str) -> enum.StrEnum:
    """A YAML string as the choice's member (a config Choice, or one of ponder/'s own
    enums); the error texts of a plain str field's."""
    if not isinstance(value, str):
        raise ConfigError(f"{name}={value!r} has the wrong type: expected str")
    values = tuple(member.value for member in choice)
    if value not in values:
        raise ConfigError(f"{name}={value!r} is invalid: valid values: {', '.join(values)}")
    return choice(value)


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix or "config"
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)} in {where}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'ponder.k=3' -> ('ponder.k', 3); values are parsed as YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def config_from_dict(data: dict, overrides: list[str] = ()) -> Config:
    data = copy.deepcopy(data)  # overrides must not write into the caller's (shared) mappings
    for text in overrides:
        _set_dotted(data, *parse_override(text))
    return _build(Config, data, "").validate()


def merge_recipes(base: dict, overlay: dict) -> dict:
    """`overlay` on top of `base`: mappings merge key by key, any other value (a list too)
    replaces the base's. The one way recipes compose (a recipe's `base:`, sweep grids)."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = merge_recipes(merged[key], value)
        merged[key] = value
    return merged


def read_yaml_mapping(path: str | Path, kind: str = "recipe file",
                      keys: str = "model:, ponder:, data:, train:, ...") -> dict:
    """A YAML file's top-level mapping; ConfigError naming the file if it is missing, not
    UTF-8 text, not YAML, or not a mapping (empty file: {})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} {path} does not exist")
    try:
        with open(path, encoding="utf-8") as stream:  # YAML errors then name the file
            data = yaml.safe_load(stream)
    except UnicodeDecodeError:
        raise ConfigError(f"{kind} {path} is not UTF-8 text; expected a YAML mapping of "
                          f"{keys}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{kind} {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {path} holds a YAML {type(data).__name__} at the top level; "
                          f"expected a mapping of {keys}")
    return data


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A recipe file's mapping with its `base:` resolved: `base: FILE` (relative to the file
    that names it) is read first, recursively, and this file's values override it."""
    path = Path(path)
    if not path.is_file():
        where = f" (the base of {_seen[-1]})" if _seen else ""
        raise ConfigError(f"recipe file {path} does not exist{where}")
    if path.resolve() in _seen:
        raise ConfigError(f"{_seen[-1]}: base {path} makes a cycle of recipe bases")
    data = read_yaml_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base={base!r} must be the path of another recipe file")
    return merge_recipes(read_recipe(path.parent / base, (*_seen, path.resolve())), data)


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    data = read_recipe(path)
    try:
        return config_from_dict(data, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def config_to_dict(cfg: Config) -> dict:
    """Plain YAML/JSON/pickle data: a choice is written as its string, as before there were
    enums (config.yaml, checkpoints and sweep records stay byte for byte the same)."""
    return dataclasses.asdict(cfg, dict_factory=_plain_dict)


def _plain_dict(items: list[tuple[str, Any]]) -> dict:
    return {key: value.value if isinstance(value, enum.Enum) else value for key, value in items}
