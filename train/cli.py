"""The `tokgen` command line: a thin dispatcher over `train/commands/`.

Each command lives in its own module with a one-line `HELP`, a `build_parser()` and a
`main(argv)`, so that `tokgen CMD --help` is that module's own parser and this file only routes;
`main` turns the flags into a typed config and calls one library function (for training, tokens and
the comparison: `tokgen.train.jobs`).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under train.commands (imported lazily: `tokgen --help` stays instant)
COMMANDS = {
    "demo": "demo",
    "compare": "compare",
    "data": "data",
    "judge": "judge",
    "train-tokenizer": "train_tokenizer",
    "extract-tokens": "extract_tokens",
    "train-generator": "train_generator",
    "sample": "sample",
}


def _module(name: str):
    return importlib.import_module(f"tokgen.train.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokgen",
        description="Image tokenizers and discrete generators, trained and compared on equal footing.",
        epilog="Run `tokgen COMMAND --help` for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=_module(name).HELP, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return _module(argv[0]).main(argv[1:]) or 0
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    parser.parse_args(argv)  # prints help or names the unknown command, then exits
    return 0


if __name__ == "__main__":
    sys.exit(main())
