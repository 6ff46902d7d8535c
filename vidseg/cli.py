"""The `vidseg` command line: one sub-command per module under `vidseg/commands/`.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the parser default. Modules are imported only when listed here, so a
broken optional dependency of one command never takes the others down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from vidseg.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, VidsegError

# sub-command name -> module under vidseg.commands
COMMANDS = {
    "info": "info",
    "data": "data",
    "train": "train",
    "eval": "evaluate",
    "score": "score",
    "stream": "stream",
    "demo": "demo",
    "export": "export",
    "convert": "convert",
    "configs": "configs",
    "plot": "plot",
}


class CliError(VidsegError):
    """An expected failure raised by a command: one line, no traceback, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message, code=code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidseg",
        description="Video semantic segmentation: train on VSPW clips, score mIoU/TC/mVC, stream causally.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of expected errors too (bad input, checkpoints)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"vidseg.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vidseg.commands.{module_name}":
                continue  # command not built yet in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VidsegError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"vidseg {args.command}: error: {exc.one_line()}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"vidseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
