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
