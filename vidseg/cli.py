"""The `vidseg` command line: one sub-command per module under `vidseg/commands/`.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the parser default. Modules are imported only when listed here, so a
broken optional dependency of one command never takes the others down.

Every expected failure ends as one line, ``vidseg COMMAND: error: MESSAGE``, and a documented
exit code (vidseg/errors.py, docs/RELIABILITY.md): argument errors through the parser (exit 2),
everything else as a `VidsegError`. The argument types and output-path checks below are shared
by the commands, so numbers are range-checked where they are parsed and output locations are
checked before any work.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

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


# `--threads` and worker counts above this multiple of the cores only add contention
MAX_THREADS_PER_CORE = 4


class CliError(VidsegError):
    """An expected failure raised by a command: one line, no traceback, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message, code=code)


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line naming the argument (no usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _bounds(low, high) -> str:
    return f">= {low}" if high is None else f"from {low} to {high}"


def int_arg(low: int, high: int | None = None, note: str = "") -> Callable[[str], int]:
    """An argparse `type`: an integer in `[low, high]` (no upper bound when `high` is None).

    `note` is added to the message (e.g. what 0 means, or where `high` comes from).
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            extra = f" ({note})" if note else ""
            raise argparse.ArgumentTypeError(
                f"expected an integer {_bounds(low, high)}{extra}, got {value}"
            )
        return value

    return parse


def float_arg(
    low: float, high: float | None = None, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse `type`: a finite number `>= low` (`> low` when `low_open`) and `<= high`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            bound += "" if high is None else f" and <= {high:g}"
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text}")
        return value

    return parse


def max_threads() -> int:
    """The most threads or worker processes a command accepts: `MAX_THREADS_PER_CORE` x cores."""
    return MAX_THREADS_PER_CORE * (os.cpu_count() or 1)


def threads_arg() -> Callable[[str], int]:
    """An argparse `type` for thread / process counts: 1 to `max_threads()`."""
    return int_arg(
        1,
        max_threads(),
        f"{MAX_THREADS_PER_CORE} x the {os.cpu_count() or 1} CPU cores; more only adds contention",
    )


def _existing_ancestor(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists (something always does: `/` or `.`)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _check_creatable(path: Path, flag: str) -> None:
    """`path` (missing) could be created: its nearest existing ancestor is a writable folder."""
    base = _existing_ancestor(path.parent)
    if not base.is_dir():
        raise CliError(f"{flag} {path}: not writable, {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise CliError(f"{flag} {path}: cannot create it, the folder {base} is not writable")


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Check, before any work, that a file can be written at `path` (nothing is created).

    Args:
        path: the output file (it may exist: it will be replaced).
        flag: how the message names it, e.g. "--json" or "score --out".
    Raises:
        CliError: `path` is a folder, a parent is a file, or the location is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise CliError(f"{flag} {path}: is a folder; expected a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise CliError(f"{flag} {path}: the file exists and is not writable")
        return path
    _check_creatable(path, flag)
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Check, before any work, that `path` is or can become a writable folder (nothing is created).

    Raises:
        CliError: `path` is a file, a parent is a file, or the location is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag} {path}: is a file; expected a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise CliError(f"{flag} {path}: the folder is not writable")
        return path
    _check_creatable(path, flag)
    return path


def add_layout_arguments(parser: argparse.ArgumentParser, root: str) -> None:
    """`--format auto|vspw|video|frames` and `--labels vspw|train_ids` for a labelled root."""
    from vidseg.data.formats import FORMATS, LABEL_FORMATS

    parser.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help=f"layout of {root} (data.format); default: judged from its folders",
    )
    parser.add_argument(
        "--labels",
        choices=LABEL_FORMATS,
        default="vspw",
        help="mask values (data.labels): vspw (0 and 255 ignored, k = class k-1; "
        "default) or train_ids (255 ignored)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vidseg",
        description="Video semantic segmentation: train on VSPW clips, score mIoU/TC/mVC, stream causally.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of expected errors too (bad input, checkpoints)",
    )
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
    # "data check", as the parser names it in its own errors
    command = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
    try:
        return int(args.func(args) or 0)
    except VidsegError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"vidseg {command}: error: {exc.one_line()}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"vidseg {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
