"""`--config FILE`: a command's settings from a JSON or YAML file, under the flags given.

    {"families": ["maskgit", "d3pm"], "max_steps": 3000, "set": {"depth": 6, "d3pm:transition": "uniform"},
     "sample_steps": {"maskgit": [4, 8, 12]}, "batch_size": 16, "lr": 1e-3}

Keys are the command's own flag names (`max_steps` or `max-steps`), so `tokgen CMD --help` lists
them all; values are typed (numbers, true/false, null for "none", lists for flags that take
several values; the KEY=VALUE and FAMILY=S1,S2 flags also take a mapping).  The file replaces the
flags' defaults and the command line overrides the file.  An unknown key, or a value of the wrong
type, is an error that names it.  YAML needs PyYAML (installed with tokgen's dependencies).
"""
from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Any

from .options import parse_bool


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="settings from a JSON or YAML file: keys are this command's flag names (max_steps or "
                             "max-steps), values typed; flags given on the command line override it")


def config_values(argv: list[str]) -> tuple[str | None, dict[str, Any]]:
    """The --config file named in argv, and its mapping ({} without one)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    path = pre.parse_known_args(argv)[0].config
    return path, (read_config(path) if path else {})


def read_config(path: str) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping.  Raises FileNotFoundError / ValueError."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    text = file.read_text()
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); or give the "
                             "settings as JSON") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"--config {path} is not valid YAML: {e}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path} is not valid JSON ({e}); YAML files end in .yaml or .yml") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"--config {path} must hold a mapping of flag names to values, got {type(values).__name__}")
    return values


def apply_config(parser: argparse.ArgumentParser, values: dict[str, Any], path: str) -> None:
    """Make the file's values the parser's defaults (flags given still win), each checked against
    its flag: a known name, the flag's type and choices."""
    actions = _by_name(parser)
    defaults = {}
    for key, value in values.items():
        action = actions.get(str(key).replace("-", "_"))
        if action is None:
            near = difflib.get_close_matches(str(key).replace("-", "_"), list(actions), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"--config {path}: unknown key {key!r}{hint}: {parser.prog} has no "
                             f"--{str(key).replace('_', '-')} flag (see {parser.prog} --help)")
        defaults[action.dest] = _value(action, value, f"--config {path}: {key}")
        action.required = False               # given by the file
    parser.set_defaults(**defaults)


def _by_name(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Each long flag by its name with underscores (--max-steps -> max_steps), --config and --help aside."""
    out = {}
    for action in parser._actions:       # argparse keeps no public list of its actions
        for option in action.option_strings:
            name = option.lstrip("-").replace("-", "_")
            if option.startswith("--") and name not in ("help", "config"):
                out[name] = action
    return out


def _value(action: argparse.Action, value: Any, where: str) -> Any:
    """The file's value as the flag would have parsed it."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    several = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    if several:
        if isinstance(value, dict):            # {KEY: VALUE} for KEY=VALUE, {FAMILY: [S1, S2]} for FAMILY=S1,S2
            value = [f"{k}={_pair_text(v, isinstance(action, argparse._AppendAction))}" for k, v in value.items()]
        elif not isinstance(value, list):
            value = [value]
        return [_one(action, v, where) for v in value]
    return _one(action, value, where)


def _pair_text(value: Any, as_json: bool) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and not as_json:
        return ",".join(str(v) for v in value)
    return json.dumps(value)


def _one(action: argparse.Action, value: Any, where: str) -> Any:
    kind = action.type
    base = kind if kind in (int, float) else getattr(kind, "base", None)     # options._or_none keeps its base
    if isinstance(value, str) and kind not in (None, str):
        try:
            value = kind(value)                # the flag's own parsing
        except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
            raise ValueError(f"{where}: {e}") from None
    elif kind is parse_bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
    elif base in (int, float) and not (value is None and base is not kind):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (base is int and isinstance(value, float)):
            raise ValueError(f"{where} must be a{'n integer' if base is int else ' number'}"
                             f"{'' if base is kind else ' or null'}, got {value!r}")
        value = base(value)
    elif kind in (None, str) and not isinstance(value, str) and not (value is None and action.default is None):
        raise ValueError(f"{where} must be text, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return value
