"""What every hitdet config shares: YAML files or built-in recipes, ``--set key=value``, type checks.

The train, search and pretrain configs are dataclasses; these helpers read and check their
values so that every command reports a bad key or type the same way (naming the key and
the file or option it came from).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hitdet.errors import UserError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted as floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except UserError:
                pass
        raise UserError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise UserError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def update_values(cls: type, values: dict[str, Any], updates: Any, source: str) -> None:
    """Check ``updates`` against the fields of dataclass ``cls`` and copy them into ``values``."""
    hints = typing.get_type_hints(cls)
    if not isinstance(updates, dict):
        raise UserError(f"{source}: expected a mapping of config keys, got {type(updates).__name__}")
    for key, value in updates.items():
        if key not in hints:
            raise UserError(f"{source}: {key}: unknown key (known: {', '.join(hints)})")
        values[key] = coerce(value, hints[key], f"{source}: {key}")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value``, the value read as YAML (``lr=0.01``, ``milestones=[8,11]``, ``hflip=false``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {text}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def read_config_file(name: str, recipes: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A YAML config file's mapping, and the recipe it starts from (its ``recipe:`` key), if any."""
    path = Path(name)
    if not path.is_file():
        raise UserError(f"{name}: config file not found (built-in recipes: {', '.join(recipes)})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{name}: invalid YAML: {str(exc).splitlines()[0]}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{name}: cannot read: {exc}") from None
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise UserError(f"{name}: expected a mapping of config keys, got {type(data).__name__}")
    data = dict(data)
    recipe = data.pop("recipe", None)
    if recipe is not None and recipe not in recipes:
        raise UserError(f"{name}: recipe: unknown recipe {recipe!r} (known: {', '.join(recipes)})")
    return data, recipe


def config_layers(config: str | os.PathLike[str] | None, recipes: Mapping[str, Any]) -> list[tuple[Any, str]]:
    """The (mapping, source) layers a ``--config`` argument stands for: a recipe, a file on a recipe, a file."""
    if config is None:
        return []
    name = str(config)
    if name in recipes:
        return [(recipes[name], f"recipe {name}")]
    data, recipe = read_config_file(name, recipes)
    layers = [(recipes[recipe], f"recipe {recipe}")] if recipe is not None else []
    return [*layers, (data, name)]
