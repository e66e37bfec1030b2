"""Frozen dataclass configs <-> command-line flags and TOML/JSON files.

One flag per field, named after it (`max_iters` -> `--max-iters`), typed from the annotation; a
field that holds a dataclass (TrainConfig.model, a GPTConfig) contributes its own fields as flat
flags (`--n-layer`), and a file may give them flat or as a table under the field's name ([model]);
bools get `--x / --no-x`; `int | None` fields also take the word `none`. A field's help text is
its `metadata["help"]`. Flags not given are absent from the parsed namespace (default SUPPRESS),
so `merge_config` can layer: dataclass defaults < base dict (e.g. a checkpoint's) < file < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing


def _field_type(cls, name: str):
    """(base type, accepts None) for a field annotated T or T | None."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _parser_for(base, optional: bool, flag: str):
    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects {base.__name__}{' or none' if optional else ''}, got {text!r}") from None

    return parse


def _nested(cls, name: str):
    """The dataclass that field `name` of `cls` holds, or None."""
    hint = typing.get_type_hints(cls)[name]
    return hint if dataclasses.is_dataclass(hint) else None


def leaf_fields(cls) -> list[tuple[type, dataclasses.Field]]:
    """(owner class, field) for every field of `cls`, a nested dataclass's fields in its place."""
    out = []
    for f in dataclasses.fields(cls):
        inner = _nested(cls, f.name)
        out.extend(leaf_fields(inner) if inner is not None else [(cls, f)])
    return out


def add_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of the dataclass `cls` (a nested dataclass's fields flat)."""
    for owner, f in leaf_fields(cls):
        base, optional = _field_type(owner, f.name)
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        help_ = f"{help_} (default: {f.default})" if help_ else f"(default: {f.default})"
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        else:
            parser.add_argument(flag, dest=f.name, type=_parser_for(base, optional, flag), default=argparse.SUPPRESS,
                                metavar=base.__name__.upper(), help=help_)


def flag_values(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` (nested ones flat) that were given as flags."""
    return {f.name: getattr(args, f.name) for _, f in leaf_fields(cls) if hasattr(args, f.name)}


def check_values(cls, values: dict, where: str) -> dict:
    """values with each checked against its field's type (an int is accepted for a float);
    ValueError naming every unknown key, or the first value of the wrong type. A nested dataclass's
    fields may be given flat or as a table under its field's name (checked as that class's)."""
    owners = {f.name: owner for owner, f in leaf_fields(cls)}
    tables = {f.name: _nested(cls, f.name) for f in dataclasses.fields(cls) if _nested(cls, f.name)}
    unknown = sorted(set(values) - set(owners) - set(tables))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(owners)}")
    out = {}
    for name, v in values.items():
        if name in tables:
            if not isinstance(v, dict):
                raise ValueError(f"{where}: {name} must be a table of its fields, got {v!r}")
            out[name] = check_values(tables[name], v, f"{where} [{name}]")
            continue
        base, optional = _field_type(owners[name], name)
        if v is None and optional:
            out[name] = None
            continue
        if base is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, base) or (base is int and isinstance(v, bool)):
            raise ValueError(f"{where}: {name} must be {base.__name__}{' or null' if optional else ''}, got {v!r}")
        out[name] = v
    return out


def load_config_file(path: str, cls) -> dict:
    """Field values from a .toml or .json file (a flat table of field = value), checked."""
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"config file {path}: {e.strerror}") from e
    try:
        if ext == ".toml":
            try:
                import tomllib  # noqa: PLC0415 - Python 3.11+
            except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
                import tomli as tomllib  # noqa: PLC0415
            values = tomllib.loads(raw.decode("utf-8"))
        elif ext == ".json":
            values = json.loads(raw.decode("utf-8"))
        else:
            raise ValueError(f"{path}: config files must end in .toml or .json")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot parse: {e}") from e
    except Exception as e:  # tomllib.TOMLDecodeError
        if isinstance(e, ValueError) and str(e).startswith(path):
            raise
        raise ValueError(f"{path}: cannot parse: {e}") from e
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a table of key = value pairs, got {type(values).__name__}")
    return check_values(cls, values, path)


def merge_config(cls, *layers: dict):
    """cls(**defaults updated by each layer in turn); later layers win."""
    values: dict = {}
    for layer in layers:
        values.update(layer or {})
    return cls(**values)
