"""`vidseg configs [FILTER]`: the packaged configs, by the names the other commands accept."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from vidseg.cli import CliError


def run(args: argparse.Namespace) -> int:
    from vidseg.packaged_configs import configs_root, describe, packaged_configs

    root = configs_root()
    if root is None:
        raise CliError("this installation has no packaged configs (reinstall vidseg)", code=1)
    configs = packaged_configs(include_bases=args.all)
    if args.filter:
        needle = args.filter.lower()
        configs = {name: path for name, path in configs.items() if needle in name.lower()}
        if not configs:
            raise CliError(
                f"no packaged config name contains {args.filter!r} "
                "(`vidseg configs` lists them all)",
                code=1,
            )
    rows = [
        {"name": name, "description": describe(path), "path": str(path)}
        for name, path in configs.items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    room = max(40, shutil.get_terminal_size((120, 24)).columns - width - 2)
    lines = []
    for row in rows:
        text = row["description"]
        if args.paths:
            text = row["path"]
        elif len(text) > room:  # the whole sentence is in --json
            text = text[: room - 3].rstrip() + "..."
        lines.append(f"{row['name']:<{width}}  {text}")
    lines.append(
        f"{len(rows)} config(s) in {root} (use: `vidseg train NAME`, or `_base_: NAME` "
        "in a YAML of your own)"
    )
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # `vidseg configs | head`: stop quietly, as other CLIs do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "configs",
        help="list the packaged configs (names usable wherever a config is expected)",
        description="List the configs shipped with vidseg: name and the first sentence of its "
        "comment. A name "
        "(`vspw/upernet_mcibipp_r50`, or `upernet_mcibipp_r50` when the file name is "
        "unique, `.yaml` optional) works wherever a config file does, and in `_base_` "
        "of your own YAML.",
    )
    p.add_argument("filter", nargs="?", help="only names containing this text (case-insensitive)")
    p.add_argument(
        "--all", action="store_true", help="also the partial `_base_/` configs the others inherit"
    )
    p.add_argument(
        "--paths", action="store_true", help="print each file's location instead of its description"
    )
    p.add_argument("--json", action="store_true", help="print as JSON (name, description, path)")
    p.set_defaults(func=run)
