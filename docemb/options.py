"""Options as dataclasses: defaults < YAML file (--config) < command-line flags.

One flag per field (help and choices from the field's metadata), so a stage's options, its
`--config` file and the resolved YAML saved beside its outputs can never disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path

import yaml

from docemb.errors import DocembError


def _base_type(annotation: object) -> type:
    """int | None -> int; list[str] -> str (with nargs); plain types as they are."""
    hint = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType):
        return next(t for t in hint if t is not type(None))
    if typing.get_origin(annotation) is list:
        return hint[0]
    return annotation  # type: ignore[return-value]


def _none_or(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    return parse


def _default(f: dataclasses.Field) -> object:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --flag per field of `cls`; defaults stay None so that YAML values survive."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        help_text = " ".join(filter(None, (f.metadata.get("help"), f"(default: {_default(f)})")))
        extra = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(hint) is list:
            kind = _base_type(hint)
            parser.add_argument(flag, nargs="+", type=kind, default=None, help=help_text, **extra)
        else:
            kind = _base_type(hint)
            parse = _none_or(kind) if isinstance(hint, types.UnionType) else kind
            parser.add_argument(flag, type=parse, default=None, help=help_text, **extra)


def resolved_values(cls: type, args: argparse.Namespace, config: str | None) -> dict:
    """The YAML file's values (if any), overridden by the flags given; unknown keys refused."""
    values: dict = {}
    if config:
        path = Path(config)
        if not path.is_file():
            raise DocembError(f"{path}: config file not found")
        values.update(load_yaml(path))
    names = {f.name for f in dataclasses.fields(cls)}
    for name in names:
        flag_value = getattr(args, name, None)
        if flag_value is not None:
            values[name] = flag_value
    unknown = set(values) - names
    if unknown:
        raise DocembError(f"{config}: unknown config keys {sorted(unknown)}")
    return values


def load_yaml(path: str | os.PathLike) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise DocembError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise DocembError(f"{path}: expected a mapping of config keys")
    return data


def to_yaml(options: object) -> str:
    return yaml.safe_dump(dataclasses.asdict(options), sort_keys=False)  # type: ignore[call-overload]
