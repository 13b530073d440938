"""The `tokgen` command line: a thin dispatcher over `train/commands/`, and the one error boundary.

Each command lives in its own module with a one-line `HELP`, a `build_parser()` and a
`main(argv)`, so that `tokgen CMD --help` is that module's own parser and this file only routes;
`main` turns the flags into a typed config and calls one library function (for training, tokens and
the comparison: `tokgen.train.jobs`).

Errors (tokgen/errors.py): a user mistake (a bad flag or value, a missing or damaged input) prints
`error: <what is wrong and how to fix it>` on stderr and exits with status 2, no traceback;
`--debug` (before or after the command) or TOKGEN_DEBUG=1 shows the traceback instead.  Ctrl-C
exits with 130.  Any other exception is a bug and keeps its traceback (status 1).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from tokgen.errors import (DEBUG_ENV, DEBUG_FLAG, EXIT_INTERRUPTED, ErrorExit, debug_enabled, is_user_error,
                     message)

# command name -> module under train.commands (imported lazily: `tokgen --help` stays instant)
COMMANDS = {
    "demo": "demo",
    "compare": "compare",
    "data": "data",
    "judge": "judge",
    "train-tokenizer": "train_tokenizer",
    "convert-tokenizer": "convert_tokenizer",
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
        epilog=f"Run `tokgen COMMAND --help` for the options of one command.  A mistake in the input prints "
               f"`error: ...` and exits with status 2; {DEBUG_FLAG} (or {DEBUG_ENV}=1) shows its traceback.",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="show the traceback of an error in the input (also: the environment variable "
                             f"{DEBUG_ENV}=1); it may come before or after COMMAND")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=_module(name).HELP, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    if not (argv and argv[0] in COMMANDS):
        parser = build_parser()
        if not argv:
            parser.print_help()
            return 0
        parser.parse_args(argv)  # prints help or names the unknown command, then exits
        return 0
    try:
        return _module(argv[0]).main(argv[1:]) or 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("\ninterrupted", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except ErrorExit as e:                    # a command's own `error: ...` (e.g. a bad --config file)
        if debug and e.__cause__ is not None:
            raise e.__cause__
        print(e.message, file=sys.stderr, flush=True)
        raise
    except Exception as e:
        if debug or not is_user_error(e):
            raise                              # a bug: the traceback is the report
        text = f"error: {message(e, _flags(argv[0]))}"
        print(text, file=sys.stderr, flush=True)
        raise ErrorExit(text) from None


def _flags(command: str) -> list[str]:
    """The long flags of a command, so a field-tagged error names its flag (--top-p, not top_p)."""
    try:
        parser = _module(command).build_parser()
    except Exception:                          # naming the flag is a nicety; never hide the error
        return []
    return [option for action in parser._actions for option in action.option_strings]


if __name__ == "__main__":
    sys.exit(main())
