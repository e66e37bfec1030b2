"""Frozen dataclass configs <-> command-line flags and TOML/JSON files.

One flag per field, named after it (`max_iters` -> `--max-iters`), typed from the annotation; a
field that holds a dataclass (TrainConfig.model, a GPTConfig) contributes its own fields as flat
flags (`--n-layer`), and a file may give them flat or as a table under the field's name ([model]);
bools get `--x / --no-x`; `int | None` fields also take the word `none`. A field's help text is
its `metadata["help"]`. A nested field may be optional (`lora: LoraConfig | None`) and may carry
`metadata["prefix"]`, put before its fields' flat names (`lora_` + `r` -> `--lora-r`); a field's
`metadata["flag"]` renames it in the flat name (`target_modules` -> `--lora-targets`), and
`metadata["parse"]` / `["check"]` parse its flag text / check a file's value where the annotation
alone cannot (a list of names or a regex). Flags not given are absent from the parsed namespace (default SUPPRESS),
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
    """The dataclass that field `name` of `cls` holds (`X` or `X | None`), or None."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else None
    return hint if dataclasses.is_dataclass(hint) else None


def flat_fields(cls, prefix: str = "", rename: bool = True) -> list[tuple[str, type, dataclasses.Field, str | None]]:
    """(flat name, owner class, field, nested field's name or None) for every field of `cls`, a
    nested dataclass's fields in its place, their names behind the nested field's prefix.
    rename=False: the fields' own names (what a table of that class holds)."""
    out = []
    for f in dataclasses.fields(cls):
        inner = _nested(cls, f.name)
        if inner is not None:
            out.extend((n, o, g, f.name) for n, o, g, _ in flat_fields(inner, prefix + f.metadata.get("prefix", "")))
        else:
            out.append((prefix + (f.metadata.get("flag", f.name) if rename else f.name), cls, f, None))
    return out


def leaf_fields(cls) -> list[tuple[type, dataclasses.Field]]:
    """(owner class, field) for every field of `cls`, a nested dataclass's fields in its place."""
    return [(owner, f) for _, owner, f, _ in flat_fields(cls)]


def add_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of the dataclass `cls` (a nested dataclass's fields flat)."""
    for name, owner, f, _ in flat_fields(cls):
        base, optional = _field_type(owner, f.name)
        flag = "--" + name.replace("_", "-")
        default = "none" if f.default is dataclasses.MISSING else f.default
        help_ = f.metadata.get("help", "")
        help_ = f"{help_} (default: {default})" if help_ else f"(default: {default})"
        if base is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        else:
            parse = f.metadata.get("parse")
            parse = _parser_for(base, optional, flag) if parse is None else _checked(parse, flag)
            parser.add_argument(flag, dest=name, type=parse, default=argparse.SUPPRESS,
                                metavar=f.metadata.get("metavar", getattr(base, "__name__", "VALUE").upper()), help=help_)


def _checked(parse, flag: str):
    def run(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return run


def flag_values(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` (nested ones flat, by flat name) that were given as flags."""
    return {n: getattr(args, n) for n, *_ in flat_fields(cls) if hasattr(args, n)}


def check_values(cls, values: dict, where: str, table: bool = False) -> dict:
    """values with each checked against its field's type (an int is accepted for a float);
    ValueError naming every unknown key, or the first value of the wrong type. A nested dataclass's
    fields may be given flat or as a table under its field's name (checked as that class's)."""
    flat = {n: (owner, f) for n, owner, f, _ in flat_fields(cls, rename=not table)}
    owners = {n: owner for n, (owner, _) in flat.items()}
    tables = {f.name: _nested(cls, f.name) for f in dataclasses.fields(cls) if _nested(cls, f.name)}
    unknown = sorted(set(values) - set(owners) - set(tables))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(owners)}")
    out = {}
    for name, v in values.items():
        if name in tables:
            if not isinstance(v, dict):
                raise ValueError(f"{where}: {name} must be a table of its fields, got {v!r}")
            out[name] = check_values(tables[name], v, f"{where} [{name}]", table=True)
            continue
        owner, f = flat[name]
        base, optional = _field_type(owner, f.name)
        if "check" in f.metadata:  # a value the annotation alone cannot check
            try:
                out[name] = f.metadata["check"](v)
            except ValueError as e:
                raise ValueError(f"{where}: {name}: {e}") from None
            continue
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
