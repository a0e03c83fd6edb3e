"""The one config system of every hitdet command: recipes, YAML files, ``--set``, nested dataclass sections.

A config is a dataclass (``TrainConfig``, ``PretrainConfig``, ``SearchConfig``); a field whose type
is itself a dataclass is a *section* (the search's ``train`` is a ``TrainConfig``, its ``strategy``
a ``strategies.SearchSettings``). :func:`load` builds one from layers, each later one on top:

1. the dataclass defaults, then ``base`` (a command's own defaults, e.g. the search's cosine
   schedule), then
2. ``--config``: a built-in recipe by name, or a YAML file -- which may start from a recipe with
   ``recipe: NAME`` -- (:func:`config_layers`);
3. ``--set key=value`` overrides, dotted keys reaching into sections (``train.lr=0.01``);
4. ``explicit`` flags (``--epochs``), where given.

Every layer is type-checked against the dataclass annotations as it is applied, so an unknown key or
a wrong type names the key and the file or option it came from. Ranges are the dataclasses' own
business (their ``__post_init__`` raises ``ValueError("field: why, got value")``); a failure there is
reported with the source that last set the field. ``dict`` fields merge across layers (the train
config's ``detector`` overrides); everything else is replaced.

YAML files are read with a size limit, without aliases (no "billion laughs") and with a nesting
limit, like every JSON input (:mod:`hitdet.io`).
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hitdet.errors import UserError

MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes; 1 MiB is generous


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted as floats).

    Tuples and sequences are passed through as given: their dataclass checks their shape and
    says what it expects (e.g. ``arc_betas: must be two numbers``).
    """
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
        names = ["null" if a is type(None) else _type_name(a) for a in args]  # YAML's word for None
        raise UserError(f"{where}: expected {' or '.join(names)}, got {value!r}")
    if origin in (tuple, collections.abc.Sequence):
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
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


def is_real(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    """An int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def require(cfg: Any, key: str, why: str, ok: Any, optional: bool = False) -> None:
    """For a config dataclass's ``__post_init__``: ``ValueError("key: why, got value")`` unless ``ok(value)``.

    None passes when ``optional``. The loader turns the error into one line naming the source of ``key``.
    """
    value = getattr(cfg, key)
    if value is None and optional:
        return
    if not ok(value):
        raise ValueError(f"{key}: {why}, got {value!r}")


def _where(source: str, path: str) -> str:
    """How an error names a key: ``--set train.lr`` for overrides, ``FILE: train.lr`` for files and recipes."""
    if source == "--set":
        return f"--set {path}"
    return source if source.startswith("--") else f"{source}: {path}"


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_dict(tp: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_dict(a) for a in typing.get_args(tp))
    return tp is dict or typing.get_origin(tp) is dict


def config_keys(cls: type) -> dict[str, Any]:
    """The settable keys of dataclass ``cls`` and their annotations (``__config_hidden__`` left out)."""
    hints = typing.get_type_hints(cls)
    hidden = getattr(cls, "__config_hidden__", ())
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in hidden}


def config_aliases(cls: type) -> dict[str, str]:
    """``{alias: key}`` of dataclass ``cls`` (its ``__config_aliases__``): dotted paths, the alias accepted as
    another name of the key (``steps_per_epoch`` for ``train.steps_per_epoch``), never printed or recorded."""
    return dict(getattr(cls, "__config_aliases__", {}))


def _pop_path(data: dict[str, Any], path: str) -> tuple[bool, Any]:
    *parents, last = path.split(".")
    for part in parents:
        data = data.get(part) if isinstance(data, dict) else None
    if isinstance(data, dict) and last in data:
        return True, data.pop(last)
    return False, None


def _get_path(data: Any, path: str) -> tuple[bool, Any]:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    data[last] = value


def canonical(cls: type, updates: Any, source: str = "config") -> Any:
    """``updates`` (one layer: a nested mapping) with each alias of ``cls`` moved to the key it names.

    Within one layer an alias and its key may both appear when one of them is None (a run's config.yaml
    from before the alias, say) or both agree; two different values are refused, naming both.
    """
    aliases = config_aliases(cls)
    if not aliases or not isinstance(updates, dict):
        return updates
    out = copy.deepcopy(updates)
    for alias, key in aliases.items():
        found, value = _pop_path(out, alias)
        if not found:
            continue
        has_key, current = _get_path(out, key)
        if has_key and current is not None and value is not None and current != value:
            raise UserError(f"{_where(source, alias)}: {alias} is another name of {key}, which this "
                            f"{'--set' if source == '--set' else 'layer'} also sets ({current!r}); give one of them")
        if value is not None or not has_key:
            _set_path(out, key, value)
    return out


def without_aliases(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A config dict (``to_dict``) without the alias paths of ``cls``: each setting once."""
    out = copy.deepcopy(data)
    for alias in config_aliases(cls):
        _pop_path(out, alias)
    return out


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of dataclass ``cls``, sections' keys included (``train.epochs``); no aliases."""
    keys = []
    aliases = config_aliases(cls) if not prefix else {}
    for name, tp in config_keys(cls).items():
        keys.append(f"{prefix}{name}")
        if _is_section(tp):
            keys += all_keys(tp, f"{prefix}{name}.")
    return [k for k in keys if k not in aliases]


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word`` (difflib), or None when nothing is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    found = suggest(word, choices)
    return f" (did you mean {found!r}?)" if found else ""


def _suggest_key(root: type, path: str) -> str | None:
    """The known dotted key an unknown ``path`` most likely meant: the same name in another section
    (``epochs`` -> ``train.epochs``), else the closest spelling (``train.lrr`` -> ``train.lr``)."""
    keys = all_keys(root)
    aliases = config_aliases(root)
    leaf = path.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k != path]
    if same_leaf:
        return min(same_leaf, key=lambda k: k.count("."))
    found = suggest(path, [*keys, *aliases])
    if found in aliases:
        return aliases[found]
    if found is None:  # a misspelt name in the right section: compare the last parts
        prefix = path.rsplit(".", 1)[0] + "." if "." in path else ""
        near = suggest(leaf, [k.removeprefix(prefix) for k in keys if k.startswith(prefix) and "." not in
                              k.removeprefix(prefix)])
        found = f"{prefix}{near}" if near else None
    return found


class Values:
    """The values of one config being built, and which source set each dotted key last."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.data = _defaults(cls)
        self.origin: dict[str, str] = {}

    def update(self, updates: Any, source: str) -> None:
        """Check ``updates`` (a mapping, nested for sections) against the dataclass and apply it (an alias
        of a key sets that key: :func:`canonical`)."""
        _apply(self.cls, self.data, canonical(self.cls, updates, source), source, "", self.origin, self.cls)

    def build(self) -> Any:
        """The dataclass, its ranges checked by its own ``__post_init__`` (errors name their source)."""
        return _build(self.cls, self.data, "", self.origin)


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = config_keys(cls)
    instance = cls()
    for name, tp in keys.items():
        value = getattr(instance, name)
        out[name] = _defaults(tp) if _is_section(tp) else value
    return out


def _apply(cls: type, values: dict[str, Any], updates: Any, source: str, prefix: str, origin: dict[str, str],
           root: type | None = None) -> None:
    keys = config_keys(cls)
    if not isinstance(updates, dict):
        what = _where(source, prefix.rstrip(".")) if prefix else source
        raise UserError(f"{what}: expected a mapping of config keys, got {type(updates).__name__}")
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in keys:
            meant = _suggest_key(root or cls, path)
            hint = f"did you mean {meant}? " if meant else ""
            aliases = {a.removeprefix(prefix) for a in config_aliases(root or cls) if a.startswith(prefix)}
            known = ", ".join(k for k in keys if k not in aliases)
            raise UserError(f"{_where(source, path)}: unknown key ({hint}known: {known})")
        tp = keys[key]
        if _is_section(tp):
            _apply(tp, values[key], value, source, f"{path}.", origin, root)
            continue
        value = coerce(value, tp, _where(source, path))
        check = getattr(cls, "__config_check__", None)
        if check is not None and value is not None:
            try:
                value = check(key, value)
            except ValueError as exc:  # "field: why"
                field, _, why = str(exc).partition(":")
                raise UserError(f"{_where(source, prefix + field)}:{why}") from None
        if _is_dict(tp) and isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **value}
            for sub in value:
                origin[f"{path}.{sub}"] = source
        values[key] = value
        origin[path] = source


def _build(cls: type, values: dict[str, Any], prefix: str, origin: dict[str, str]) -> Any:
    keys = config_keys(cls)
    kwargs = {k: (_build(tp, values[k], f"{prefix}{k}.", origin) if _is_section(tp) else values[k])
              for k, tp in keys.items()}
    try:
        return cls(**kwargs)
    except UserError:
        raise
    except (ValueError, TypeError) as exc:  # the dataclass's own check: "field: why, got value"
        field, sep, why = str(exc).partition(":")
        if not sep:
            raise UserError(f"config: {prefix}{exc}") from None
        path = f"{prefix}{field}"
        source = origin.get(path) or origin.get(f"{prefix}{field.split('.')[0]}")
        where = _where(source, path) if source else f"config: {path}"
        raise UserError(f"{where}:{why}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value``, the value read as YAML (``lr=0.01``, ``milestones=[8,11]``, ``hflip=false``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {text}: expected key=value")
    try:
        value = _safe_load(raw, f"--set {key}") if raw.strip() else None
    except UserError:
        value = raw
    return key, value


def nested(key: str, value: Any) -> dict[str, Any]:
    """``train.detector.min_size``, 64 -> ``{"train": {"detector": {"min_size": 64}}}``."""
    update: Any = value
    for part in reversed(key.split(".")):
        update = {part: update}
    return update


class _StrictLoader(yaml.SafeLoader):
    """YAML without aliases: a config needs none, and they are how a small file expands into a huge one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a config",
                                              event.start_mark)
        return super().compose_node(parent, index)


# YAML 1.2 numbers that YAML 1.1 (PyYAML) reads as strings: 1e-3, 5E4, -2e+1 (no dot). Users write lr: 1e-3.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _safe_load(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML: {' '.join(str(exc).split())[:200]}") from None
    except RecursionError:
        raise UserError(f"{source}: YAML nested too deeply") from None


def read_yaml(path: str | os.PathLike[str], max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """A YAML file's content, bounded in size, aliases and depth; errors name the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UserError(f"{path}: config file too large ({size} bytes; at most {max_bytes})")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return _safe_load(text, str(path))


def read_config_file(name: str, recipes: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A YAML config file's mapping, and the recipe it starts from (its ``recipe:`` key), if any."""
    path = Path(name)
    if not path.is_file():
        raise UserError(f"{name}: config file not found (built-in recipes: {', '.join(recipes)})")
    data = read_yaml(path)
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise UserError(f"{name}: expected a mapping of config keys, got {type(data).__name__}")
    data = dict(data)
    recipe = data.pop("recipe", None)
    if recipe is not None and recipe not in recipes:
        raise UserError(f"{name}: recipe: unknown recipe {recipe!r} (known: {', '.join(recipes)})")
    return data, recipe


def config_layers(
    config: str | os.PathLike[str] | None, recipes: Mapping[str, Any], default_recipe: str | None = None
) -> list[tuple[Any, str]]:
    """The (mapping, source) layers a ``--config`` argument stands for: a recipe, a file on a recipe, a file.

    ``default_recipe``: the recipe a file without ``recipe:`` (or no ``--config`` at all) starts from.
    """
    default = [(recipes[default_recipe], f"recipe {default_recipe}")] if default_recipe is not None else []
    if config is None:
        return default
    name = str(config)
    if name in recipes:
        return [(recipes[name], f"recipe {name}")]
    data, recipe = read_config_file(name, recipes)
    layers = [(recipes[recipe], f"recipe {recipe}")] if recipe is not None else default
    return [*layers, (data, name)]


def load(
    cls: type,
    recipes: Mapping[str, Any],
    config: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    *,
    base: Iterable[tuple[Any, str]] = (),
    explicit: Mapping[str, Any] | None = None,
    flags: Mapping[str, tuple[str, Any]] | None = None,
    default_recipe: str | None = None,
) -> Any:
    """Build config dataclass ``cls`` from its layers (see the module docstring).

    ``explicit``: ``{key: value}`` of flags named like their key (``batch_size`` is ``--batch-size``);
    ``flags``: ``{"--num-ops": ("strategy.num_ops", value)}`` for the others. Values that are None
    (a flag not given) are skipped; an error in one names the flag, as the user typed it.
    ``default_recipe``: what a config file without ``recipe:``, or no config, starts from.
    """
    values = Values(cls)
    for data, source in [*base, *config_layers(config, recipes, default_recipe)]:
        values.update(data, source)
    for text in overrides:
        key, value = parse_override(text)
        values.update(nested(key, value), "--set")
    named = {f"--{key.replace('_', '-')}": (key, value) for key, value in (explicit or {}).items()}
    for flag, (key, value) in {**named, **(flags or {})}.items():
        if value is not None:  # a flag given on the command line: named as the flag
            values.update(nested(key, value), flag)
    return values.build()

