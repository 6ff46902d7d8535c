"""Training curves from a run's `scalars.jsonl`: loss terms, learning rate per parameter group and
validation metrics against the iteration, drawn into one PNG (matplotlib, the `vidseg[tb]` extra).

The figure is rendered by matplotlib's Agg canvas directly, without pyplot: no display, no global
backend switch, nothing left open in the calling process.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from vidseg.errors import VidsegError

SCALARS_FILE = "scalars.jsonl"
CURVES_FILE = "curves.png"
# validation metrics drawn, in this order, with their names in the papers; fractions in the jsonl
VAL_METRICS = {"miou": "mIoU", "mvc8": "mVC_8", "mvc16": "mVC_16", "tc": "TC"}
PANEL_TITLES = {
    "loss": "training loss",
    "lr": "learning rate per parameter group",
    "val": "validation",
}
FIG_SIZE_IN = (15.0, 4.4)
DPI = 100

Series = dict[str, tuple[list[int], list[float]]]  # label -> (iterations, values)


class PlotError(VidsegError):
    """The curves cannot be drawn: no run folder, no readable scalars, or no matplotlib."""


@dataclass
class CurvesSummary:
    """What `plot_curves` drew.

    Attributes:
        out: the PNG written.
        size: its (width, height) in pixels.
        panels: panel key (`loss`, `lr`, `val`) -> labels of the series drawn in it.
        rows: readable rows of scalars.jsonl.
        bad_lines: lines skipped as unreadable (a run killed mid-write cuts its last line short).
        not_plotted: numeric tags present but not drawn, as `phase/key` (timings, memory stats,
            tags of other versions).
        no_values: labels of series with no finite value (e.g. mVC_16 on videos shorter than
            16 frames is NaN), so not drawn.
        last_iter: the largest iteration seen.
    """

    out: Path
    size: tuple[int, int]
    panels: dict[str, list[str]]
    rows: int
    bad_lines: int
    not_plotted: list[str] = field(default_factory=list)
    no_values: list[str] = field(default_factory=list)
    last_iter: int = 0

    def describe(self) -> str:
        """A few lines for the terminal: the file, then the series of each panel."""
        lines = [
            f"wrote {self.out} ({self.size[0]}x{self.size[1]} px) from {self.rows} rows "
            f"up to iteration {self.last_iter}"
        ]
        for key, labels in self.panels.items():
            lines.append(f"  {PANEL_TITLES[key]}: {', '.join(labels) if labels else 'no rows'}")
        if self.no_values:
            lines.append(f"  not drawn, no finite value: {', '.join(self.no_values)}")
        if self.bad_lines:
            lines.append(
                f"  skipped {self.bad_lines} unreadable line(s) of {SCALARS_FILE} "
                "(a stopped run can cut its last line short)"
            )
        return "\n".join(lines)


def read_scalars(path: str | os.PathLike) -> tuple[list[dict], int]:
    """Rows of a scalars.jsonl file and the number of lines that could not be read.

    A row is a JSON object with an integer-valued `iter`; anything else (a line cut short when
    the run was killed, a stray edit) is counted and skipped.

    Raises:
        PlotError: the file cannot be read.
    """
    rows, bad = [], 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    row["iter"] = int(row["iter"])
                except (ValueError, TypeError, KeyError, OverflowError):
                    bad += 1
                    continue
                rows.append(row)
    except OSError as exc:
        raise PlotError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return rows, bad


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def collect_series(rows: list[dict]) -> tuple[dict[str, Series], list[str], list[str]]:
    """Sort the rows' numbers into panels.

    Train rows give the loss terms (`loss`, the total, and `loss_*`) and the learning rates
    (`lr_<group>` per parameter group; the single `lr` of older runs when there are none).
    Val rows give `VAL_METRICS` in percent. A repeated (phase, tag, iteration) keeps its last
    value; NaN / inf values (e.g. mVC_16 on videos shorter than 16 frames) are left out.

    Returns:
        `{"loss": Series, "lr": Series, "val": Series}` (each sorted by iteration), the sorted
        `phase/key` tags with numbers that no panel shows, and the labels of panel series
        whose values are all NaN / inf.
    """
    values: dict[tuple[str, str], dict[int, float]] = {}
    for row in rows:
        phase = str(row.get("phase", "train"))
        for key, raw in row.items():
            v = _number(raw)
            if key not in ("iter", "phase") and (v is not None or isinstance(raw, float)):
                values.setdefault((phase, key), {})
                if v is not None:
                    values[(phase, key)][row["iter"]] = v

    has_group_lr = any(p == "train" and k.startswith("lr_") for p, k in values)
    panels: dict[str, Series] = {"loss": {}, "lr": {}, "val": {}}
    placed, no_values = set(), []
    for (phase, key), points in sorted(values.items()):
        if phase == "train" and (key == "loss" or key.startswith("loss_")):
            panel, label, scale = "loss", "loss (total)" if key == "loss" else key, 1.0
        elif phase == "train" and (key.startswith("lr_") or (key == "lr" and not has_group_lr)):
            panel, label, scale = "lr", key[3:] if key.startswith("lr_") else "lr", 1.0
        elif phase == "val" and key in VAL_METRICS:
            panel, label, scale = "val", VAL_METRICS[key], 100.0
        else:
            continue
        placed.add((phase, key))
        if points:
            its = sorted(points)
            panels[panel][label] = (its, [points[i] * scale for i in its])
        else:
            no_values.append(label)
    panels["val"] = {
        VAL_METRICS[k]: panels["val"][VAL_METRICS[k]]
        for k in VAL_METRICS
        if VAL_METRICS[k] in panels["val"]
    }
    panels["loss"] = dict(sorted(panels["loss"].items(), key=lambda kv: kv[0] != "loss (total)"))
    not_plotted = sorted(f"{p}/{k}" for p, k in values if (p, k) not in placed)
    return panels, not_plotted, no_values


def smooth(values: list[float], span: int) -> list[float]:
    """Exponential moving average with weight 2 / (span + 1), bias-corrected at the start so the
    first points are not pulled towards zero (the smoothing TensorBoard shows)."""
    alpha = 2.0 / (span + 1.0)
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        avg = (1.0 - alpha) * avg + alpha * v
        norm = (1.0 - alpha) * norm + alpha
        out.append(avg / norm)
    return out


def _draw_lines(ax, series: Series, smoothed: bool, markers: bool) -> None:
    """One line per series; with `smoothed` (noisy losses, not the exact lr schedule) a long
    series is drawn faint and raw under its smoothed line."""
    for i, (label, (its, vals)) in enumerate(series.items()):
        colour = f"C{i % 10}"
        span = len(vals) // 15  # about 15 smoothing windows across the run
        if smoothed and span >= 2:
            ax.plot(its, vals, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(its, smooth(vals, span), color=colour, linewidth=1.6, label=label)
        else:
            ax.plot(
                its,
                vals,
                color=colour,
                linewidth=1.4,
                label=label,
                marker="o" if markers or len(vals) <= 20 else None,
                markersize=3.5,
            )


def _wants_log(series: Series) -> bool:
    """Log scale when every value is positive and they span more than a decade, so small terms
    (e.g. a 0.01-weighted loss) stay readable next to the total."""
    vals = [v for _, vs in series.values() for v in vs]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > 10.0


def _panel(ax, key: str, series: Series, empty_note: str, last_iter: int) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    ax.set_title(PANEL_TITLES[key], fontsize=11)
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, max(last_iter, 1) * 1.02)  # the same x range in every panel, so they line up
    ax.grid(True, alpha=0.3)
    if not series:
        ax.text(
            0.5,
            0.5,
            empty_note,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="0.4",
            wrap=True,
        )
        ax.set_yticks([])
        return
    if key == "loss":
        ax.set_ylabel("loss (mean over the log interval)")
        if _wants_log(series):
            ax.set_yscale("log")
            # labels at 1, 2, 5 x 10^k: the default labels only the powers of ten
            ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        _draw_lines(ax, series, smoothed=True, markers=False)
    elif key == "lr":
        ax.set_ylabel("learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        _draw_lines(ax, series, smoothed=False, markers=False)
    else:
        ax.set_ylabel("score (%)")
        _draw_lines(ax, series, smoothed=False, markers=True)
    ax.legend(fontsize=8, loc="best", framealpha=0.8)


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotError(
            f"matplotlib is not installed ({exc}); `pip install 'vidseg[tb]'` adds it"
        ) from exc
    return Figure, FigureCanvasAgg


def plot_curves(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> CurvesSummary:
    """Draw the training curves of a run folder into a PNG.

    Three panels against the iteration: the loss terms (log scale when they span more than a
    decade; a smoothed line over the faint raw one on long runs), the learning rate of each
    parameter group (backbone / heads), and validation mIoU, mVC_8, mVC_16 and TC in percent.

    Args:
        run_dir: a training run folder holding `scalars.jsonl`.
        out: PNG to write (default `<run_dir>/curves.png`); its folder is created. Written to a
            temporary file first, so a viewer never sees half an image.

    Returns:
        What was drawn (`CurvesSummary`).

    Raises:
        PlotError: `run_dir` is not a folder, has no readable rows in `scalars.jsonl`, matplotlib
            is missing, or the PNG cannot be written.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise PlotError(f"{run}: no such run folder")
    scalars = run / SCALARS_FILE
    if not scalars.is_file():
        raise PlotError(f"{run}: no {SCALARS_FILE} (is it a vidseg training run folder?)")
    rows, bad = read_scalars(scalars)
    if not rows:
        what = f"only {bad} unreadable line(s)" if bad else "no rows yet"
        raise PlotError(f"{scalars}: {what}; nothing to plot")
    panels, not_plotted, no_values = collect_series(rows)
    if not any(panels.values()):
        raise PlotError(f"{scalars}: no loss, learning-rate or validation values to plot")
    Figure, FigureCanvasAgg = _matplotlib()

    out_path = Path(out) if out is not None else run / CURVES_FILE
    last_iter = max(r["iter"] for r in rows)
    fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    # the folder's own name only: a full path would put this machine's layout into the picture
    fig.suptitle(
        f"{run.resolve().name}: {len(rows)} rows of {SCALARS_FILE}, up to iteration {last_iter}",
        fontsize=12,
    )
    _panel(axes[0], "loss", panels["loss"], "no training rows", last_iter)
    _panel(axes[1], "lr", panels["lr"], "no learning-rate values", last_iter)
    _panel(
        axes[2],
        "val",
        panels["val"],
        "no validation rows\n(train.validate: true and train.val_interval\nlog mIoU / mVC / TC)",
        last_iter,
    )
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.tmp")
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, out_path)
    except OSError as exc:
        raise PlotError(f"{out_path}: cannot write ({exc.strerror or exc})") from exc
    width, height = (round(s * DPI) for s in FIG_SIZE_IN)
    return CurvesSummary(
        out=out_path,
        size=(width, height),
        panels={k: list(v) for k, v in panels.items()},
        rows=len(rows),
        bad_lines=bad,
        not_plotted=not_plotted,
        no_values=no_values,
        last_iter=last_iter,
    )
