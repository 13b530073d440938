"""Flags generated from dataclasses: each says what it takes and parses to the field's type."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from tokgen.train.commands.options import add_dataclass_options, dataclass_from_args


@dataclasses.dataclass
class Settings:
    steps: int | None = None                                          # sampling steps
    top_p: float | None = 0.9                                         # nucleus mass
    mode: str = dataclasses.field(default="a", metadata={"choices": ["a", "b"]})
    scales: tuple[int, ...] = (1, 2)                                  # as JSON
    fast: bool = False


def parse(*argv: str) -> Settings:
    p = argparse.ArgumentParser(prog="t")
    add_dataclass_options(p, Settings)
    return dataclass_from_args(Settings, p.parse_args(list(argv)))


def test_optional_numbers_parse_to_their_type_or_none_and_say_so():
    assert parse() == Settings()
    got = parse("--steps", "16", "--top-p", "none", "--mode", "b", "--scales", "[1,2,4]", "--fast", "true")
    assert got == Settings(steps=16, top_p=None, mode="b", scales=[1, 2, 4], fast=True)
    assert isinstance(got.steps, int)
    p = argparse.ArgumentParser(prog="t")
    add_dataclass_options(p, Settings)
    text = p.format_help()
    assert "--steps INT|none" in text and "--top-p FLOAT|none" in text and "{a,b}" in text
    assert "sampling steps (default: None)" in text                   # the field's comment is the help


@pytest.mark.parametrize("argv,message", [(("--steps", "x"), "invalid int value: 'x'"),
                                          (("--top-p", "0.9.1"), "invalid float value"),
                                          (("--mode", "c"), "invalid choice: 'c'")])
def test_a_bad_value_names_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    err = capsys.readouterr().err
    assert argv[0] in err and message in err


# ---------------------------------------------------------------------------- --config FILE

def write(path, text: str):
    path.write_text(text)
    return str(path)


def train_generator_args(argv):
    from tokgen.train.commands import train_generator
    from tokgen.train.commands.options import parse_args

    return parse_args(train_generator.build_parser(), argv)


@pytest.mark.parametrize("name,text", [
    ("run.json", '{"tokens": "t", "family": "ar", "max-steps": 50, "lr": 1e-3, "set": {"depth": 2}, "top_p": null}'),
    ("run.yaml", "tokens: t\nfamily: ar\nmax_steps: 50\nlr: 1.0e-3\nset: {depth: 2}\ntop_p: null\n"),
])
def test_a_config_file_gives_the_defaults_and_flags_win(tmp_path, name, text):
    config = write(tmp_path / name, text)
    args = train_generator_args(["--config", config])
    assert (args.tokens, args.family, args.max_steps, args.lr, args.set, args.top_p) == \
        ("t", "ar", 50, 1e-3, ["depth=2"], None)
    args = train_generator_args(["--config", config, "--max-steps", "7", "--family", "var", "--set", "heads=2"])
    assert (args.max_steps, args.family, args.set) == (7, "var", ["depth=2", "heads=2"])
    assert train_generator_args(["--tokens", "t"]).max_steps == 20_000      # no file: the flags' own defaults


@pytest.mark.parametrize("text,message", [
    ('{"tokens": "t", "max_step": 5}', "unknown key 'max_step' (did you mean 'max_steps'?)"),
    ('{"tokens": "t", "max_steps": "many"}', "invalid literal for int"),
    ('{"tokens": "t", "max_steps": 2.5}', "max_steps must be an integer"),
    ('{"tokens": "t", "family": "gan"}', "family must be one of"),
    ('{"tokens": "t", "tensorboard": "maybe"}', "expected true or false"),
    ('[1, 2]', "must hold a mapping"),
    ('{"tokens": ', "is not valid JSON"),
])
def test_a_bad_config_file_is_a_clear_error(tmp_path, text, message):
    config = write(tmp_path / "bad.json", text)
    with pytest.raises(SystemExit, match=r"^error: --config .*" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?")):
        train_generator_args(["--config", config])
    with pytest.raises(SystemExit, match="no such file"):
        train_generator_args(["--config", str(tmp_path / "missing.json")])


# ---------------------------------------------------------------------------- compare's flags, typed

def compare_config(*argv: str, config: str | None = None):
    from tokgen.train.commands import compare
    from tokgen.train.commands.compare_flags import config_from_flags
    from tokgen.train.commands.options import parse_args

    argv = ["--tokens", "t", "--tokenizer", "k", *argv] + (["--config", config] if config else [])
    return config_from_flags(vars(parse_args(compare.build_parser(), argv)))


def test_compare_train_flags_is_the_same_as_the_typed_flags_and_wins_over_them():
    typed = compare_config("--batch-size", "16", "--lr", "1e-3", "--warmup-steps", "5")
    alias = compare_config("--lr", "5", "--train-flags", "--batch-size 16 --lr 1e-3 --warmup-steps 5")
    assert typed == alias
    assert (typed.train.batch_size, typed.train.lr, typed.schedule.warmup_steps) == (16, 1e-3, 5)
    assert typed.train.max_steps == 2_000 and typed.seed == 0                # compare's own defaults
    with pytest.raises(ValueError, match="--family maskgit is not a training flag"):
        compare_config("--train-flags", "--family maskgit")


def test_compare_flags_and_a_config_file_give_one_typed_config(tmp_path):
    got = compare_config("--set", "depth=2", "--set", "d3pm:transition=\"uniform\"", "--sample-steps", "maskgit=4,8",
                         "--families", "maskgit", "d3pm", "--cfg-scale", "2")
    assert got.overrides == {"depth": 2, "d3pm:transition": "uniform"} and got.sample_steps == {"maskgit": (4, 8)}
    assert got.families == ("maskgit", "d3pm") and got.sampling.cfg_scale == 2.0
    config = write(tmp_path / "c.yaml", "families: [maskgit, d3pm]\nset: {depth: 2, d3pm:transition: uniform}\n"
                                        "sample_steps: {maskgit: [4, 8]}\ncfg_scale: 2\n")
    assert compare_config(config=config) == got
    with pytest.raises(ValueError, match="--sample-steps expects FAMILY=S1,S2"):
        compare_config("--sample-steps", "maskgit")


def test_no_command_imports_another():
    """Commands call library functions (tokgen.train.jobs), never each other."""
    import ast
    from pathlib import Path

    from tokgen.train.cli import COMMANDS

    folder = Path(__file__).resolve().parents[1] / "train" / "commands"
    commands = set(COMMANDS.values())
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = (node.module or "").removeprefix("tokgen.train.commands").lstrip(".")
                named = {module.split(".")[0]} if module else {a.name for a in node.names}
                inside = node.level == 1 or (node.module or "").startswith("tokgen.train.commands")
                assert not (inside and named & commands - {path.stem}), f"{path.name} imports {named & commands}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("tokgen.train.commands."), f"{path.name} imports {alias.name}"
