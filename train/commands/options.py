"""Command-line options generated from config dataclasses, so every field (with the comment that
documents it) is settable from the shell without a second list of flags to keep in step; the
dataset flags; and parsing: the flags over a --config file (config_file.py) over the defaults."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import shlex
import typing

from tokgen.errors import ErrorExit


def _field_comments(cls) -> dict[str, str]:
    """The `# comment` after each field in the dataclass's source: it becomes the --help text."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+)\s*:.*?#\s*(.*)$", line)
        if m:
            comments[m.group(1)] = m.group(2).replace("%", "%%")
    return comments


def add_dataclass_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                          defaults: dict | None = None, title: str | None = None) -> None:
    """Add `--field-name` for each field of `cls` (default from `defaults` or the dataclass)."""
    group = parser.add_argument_group(title or cls.__name__)
    comments, hints = _field_comments(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = (defaults or {}).get(f.name, f.default)
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{comments.get(f.name, '')} (default: {default})"
        if kind is bool:
            group.add_argument(flag, dest=f.name, type=parse_bool, default=default, metavar="BOOL", help=help_text)
        elif kind in (int, float, str):  # a field may list its allowed values in metadata["choices"]
            group.add_argument(flag, dest=f.name, type=kind, default=default, choices=f.metadata.get("choices"),
                               help=help_text)
        elif (base := _optional_scalar(kind)) is not None:  # int | None and kin: a number, or "none"
            group.add_argument(flag, dest=f.name, type=_or_none(base), default=default,
                               metavar=f"{_METAVARS[base]}|none", help=help_text)
        else:  # tuples, lists, dicts: given as JSON (or a plain string)
            group.add_argument(flag, dest=f.name, type=parse_json, default=default, metavar="JSON", help=help_text)


_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}


def _optional_scalar(kind) -> type | None:
    """int for `int | None` (float, str alike); None for any other annotation."""
    args = typing.get_args(kind)
    rest = [a for a in args if a is not type(None)]
    if len(args) == 2 and len(rest) == 1 and rest[0] in _METAVARS:
        return rest[0]
    return None


def _or_none(base: type):
    """An argparse type: "none" (or "null") -> None, else base(text); argparse names the flag on a bad value."""
    def parse(text: str):
        return None if text.lower() in ("none", "null") else base(text)
    parse.__name__ = base.__name__        # argparse's message: "invalid int value: 'x'"
    parse.base = base                     # what a --config file's value is checked against
    return parse


def dataclass_from_args(cls, args: argparse.Namespace, **extra):
    """An instance of `cls` from the flags of its fields (`add_dataclass_options`), `extra` on top."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(extra)
    return cls(**values)


def parse_overrides(pairs: list[str] | None) -> dict:
    """['codebook_size=512', 'scales=[1,2,4,8]'] -> {'codebook_size': 512, 'scales': [1, 2, 4, 8]}."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r} (e.g. --set codebook_size=512)")
        out[key.strip()] = parse_json(value)
    return out


def parse_json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None if text.lower() in ("none", "null") else text


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


DATASET_HELP = "shapes | digits | photos | folder:PATH | hf:NAME_OR_PATH"


def add_dataset_arguments(parser: argparse.ArgumentParser, default: str = "shapes") -> None:
    """--dataset and the dataset's own options (today: --num-objects of shapes)."""
    parser.add_argument("--dataset", default=default, help=DATASET_HELP)
    parser.add_argument("--num-objects", type=int, default=None,
                        help="shapes only: 1 or 2 objects per image (default: the dataset's 1)")


def dataset_options(args: argparse.Namespace) -> dict:
    """The options `build_dataset` and `judge_for` take, from `add_dataset_arguments`' flags; token
    folders record them, so generator training judges its samples with the judge of the same data."""
    if args.num_objects is None:
        return {}
    if not str(args.dataset).startswith("shapes"):
        raise ValueError(f"--num-objects {args.num_objects}: an option of --dataset shapes, not {args.dataset}: "
                         "drop it")
    if args.num_objects not in (1, 2):
        raise ValueError(f"--num-objects {args.num_objects}: shapes images hold 1 or 2 objects")
    return {"num_objects": args.num_objects}


# ---------------------------------------------------------------------------- parsing

def parse_args(parser: argparse.ArgumentParser, argv: list[str], config=None) -> argparse.Namespace:
    """The flags in argv over a --config file (config_file.py) over the parser's defaults; a bad
    file is `error: ...`.  `config`: the (path, values) of a file already read."""
    from .config_file import apply_config, config_values

    try:
        path, values = config if config is not None else config_values(argv)
        if path:
            apply_config(parser, values, path)
    except (ValueError, FileNotFoundError) as e:      # exits 2 (`error: ...` printed by tokgen.train.cli)
        raise ErrorExit(str(e)) from e
    return parser.parse_args(argv)


def given_flags(parser: argparse.ArgumentParser, text: str) -> tuple[dict, list[str]]:
    """The flags given in one string (e.g. compare's --train-flags "--lr 1e-3"), parsed by
    `parser` with every default left out: ({dest: value} of those given, the words it does not know)."""
    for action in parser._actions:           # argparse keeps no public list of its actions
        if action.dest != "help":
            action.default, action.required = argparse.SUPPRESS, False
    args, unknown = parser.parse_known_args(shlex.split(text))
    return vars(args), unknown
