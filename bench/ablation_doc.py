"""Write the results of `bench/ablation.py` into docs/ABLATIONS.md, between marker comments.

The page is hand-written except three generated blocks, each between
`<!-- ablation:NAME:start -->` and `<!-- ablation:NAME:end -->`: `variants` (the table of
variants, from the bench's own table, so the page cannot drift from the code), `results` (the
full run) and `quick` (the smoke run). A run replaces its own block and the variants block only.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

COLUMNS = (
    ("miou", "mIoU"),
    ("mvc8", "mVC_8"),
    ("mvc16", "mVC_16"),
    ("tc", "TC-DIS"),
    ("miou_corrupted", "mIoU corrupted frames"),
    ("twin_confusion", "twin confusion"),
)


def _cell(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.2f} ± {std:.2f}"


def variants_block(variants: dict) -> str:
    """Markdown table of the variants: name, what it changes from the base config."""
    from vidseg.api import section_overrides

    rows = ["| variant | what it is | overrides of the base |", "|---|---|---|"]
    for name, (text, overrides) in variants.items():
        sets = " ".join(section_overrides(overrides))
        rows.append(f"| `{name}` | {text} | {f'`{sets}`' if sets else 'none (the base)'} |")
    return "\n".join(rows)


def results_block(summary: dict, command: str, quick: bool) -> str:
    """Markdown: how the numbers were made, the variants table and the directions table."""
    kind = (
        "Quick smoke run (not the ablation: a few iterations on a tiny set)"
        if quick
        else "Full run"
    )
    lines = [
        f"{kind}, {time.strftime('%Y-%m-%d')}: `{command}`",
        "",
        f"- machine: {summary['machine']}, {summary['load_end']:.1f} at the end",
        f"- {summary['seeds']} seeds per variant, {summary['iters']} iterations per run; "
        f"{summary['minutes']:.1f} min of training and evaluation in all "
        f"({summary['wall_minutes']:.1f} min wall time in this invocation)",
        "",
        "| variant | " + " | ".join(title for _, title in COLUMNS) + " | s/iter |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name, row in summary["variants"].items():
        cells = [_cell(row[key], row[f"{key}_std"]) for key, _ in COLUMNS]
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {row['s_per_iter']:.2f} |")
    lines += [
        "",
        "Mean ± sample std over seeds, in %. Twin confusion: lower is better.",
        "",
        "| direction | claim | delta | seed spread | reproduced | beyond spread |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in summary["directions"].items():
        lines.append(
            f"| {name} | {d['claim']} | {d['delta']:+.2f} | {d['spread']:.2f} | "
            f"{d['reproduced']} | {d['beyond_seed_spread']} |"
        )
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    """Replace the body of block `name`; raises ValueError when its markers are missing."""
    pattern = re.compile(
        rf"(<!-- ablation:{name}:start -->\n).*?(<!-- ablation:{name}:end -->)", re.S
    )
    if not pattern.search(text):
        raise ValueError(f"docs/ABLATIONS.md has no <!-- ablation:{name}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text, count=1)


def write_results(path: Path, summary: dict, variants: dict, command: str, quick: bool) -> None:
    """Update the variants block and the `results` (or `quick`) block of `path` in place."""
    text = path.read_text(encoding="utf-8")
    text = replace_block(text, "variants", variants_block(variants))
    text = replace_block(
        text, "quick" if quick else "results", results_block(summary, command, quick)
    )
    path.write_text(text, encoding="utf-8")
