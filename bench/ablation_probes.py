"""Test-time probes of the ablation runs: does a trained model actually use its memory and history?

A direction of `bench/ablation.py` compares separately trained variants. When one fails, the
question is whether the part is broken (never updated, ignored) or works and does not help here.
These probes answer it on the finished runs themselves, without training:

  no_history       video variants, every frame processed as the first of its video (each history
                   map is the frame's own, `evaluate(no_history=True)`): how much of the video
                   model's score comes from the previous frames.
  memory_permuted  memory variants, the class memory's rows cyclically shifted among the classes
                   seen in training (distribution memory: statistics and noise rows together, i.e.
                   the rows of C_dl): how much the score depends on each class's own memory entry.

A drop means the part is used; no drop means it is ignored. Reads the runs of `bench/ablation.py`
(same `--out`) and writes nothing into them: predictions go to a temporary folder, each probe's
scores to `<out>/probes/<variant>/seed<k>/<probe>.json`, kept (and skipped on a rerun) while
newer than the run's `result.json`.

Usage:
  PYTHONPATH=. python bench/ablation_probes.py --write-doc     # after the full ablation run
Options: --out DIR, --quick (the quick run's budget and folder), --seeds N, --write-doc.
Last line: {"probes": {VARIANT: {PROBE: {"miou", "miou_std", "delta", "delta_std",
"miou_corrupted", "delta_corrupted", ...}}}, "seeds": N, "minutes": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ablation import (  # noqa: E402
    FULL,
    QUICK,
    VARIANTS,
    _finite,
    _mean_std,
    score_frames,
    variant_config,
)

VIDEO_VARIANTS = ("video_h1_cbi", "video_h2_cbi", "video_h2_r")
MEMORY_VARIANTS = ("upernet_mcibi", "upernet_mcibipp", "video_h2_cbi")


def permute_memory(model) -> int:
    """Cyclically shift the memory rows of the classes seen in training; returns their count.

    Distribution memory: `stats` and `noise` rows move together, so C_dl's rows are permuted.
    Vector memory: the `memory` rows. Raises ValueError for a model without a memory.
    """
    import torch

    memory = model.image_model.memory
    if memory is None:
        raise ValueError("the model has no memory")
    seen = torch.nonzero(memory.seen).flatten()
    if len(seen) < 2:
        return len(seen)
    shifted = seen.roll(1)
    with torch.no_grad():
        for name in ("stats", "noise", "memory"):
            buf = getattr(memory, name, None)
            if buf is not None:
                buf[seen] = buf[shifted].clone()
    return len(seen)


def probe_run(cfg, run_dir: Path, probe: str) -> dict:
    """Evaluate one finished run under `probe`; returns miou, mvc8, miou_corrupted (in %)."""
    import torch

    from vidseg.engine.evaluate import evaluate
    from vidseg.engine.inference import load_inference_model

    _, model = load_inference_model(cfg, run_dir)
    if probe == "memory_permuted":
        permute_memory(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as bench/ablation.py evaluates
    try:
        with tempfile.TemporaryDirectory() as tmp:
            metrics = evaluate(
                model,
                cfg,
                out_dir=tmp,
                save_pred=True,
                progress=False,
                no_history=probe == "no_history",
            )
            extra = score_frames(
                Path(cfg.data.root), Path(tmp) / "pred", cfg.eval.split, cfg.model.num_classes
            )
    finally:
        torch.set_num_threads(threads)
    return {
        "miou": 100 * metrics["miou"],
        "mvc8": 100 * metrics["mvc8"],
        "miou_corrupted": extra["miou_corrupted"],
    }


def summarise(pairs: list[tuple[dict, dict]]) -> dict:
    """Mean ± std over seeds of the probed metrics and of (probed - trained) per metric."""
    row = {}
    for key in ("miou", "mvc8", "miou_corrupted"):
        row[key], row[f"{key}_std"] = _mean_std([p[key] for p, _ in pairs])
        suffix = "" if key == "miou" else f"_{key.removeprefix('miou_')}"
        row[f"delta{suffix}"], row[f"delta{suffix}_std"] = _mean_std(
            [None if r[key] is None else p[key] - r[key] for p, r in pairs]
        )
    return row


def probes_block(summary: dict, command: str) -> str:
    """Markdown table of the probes for docs/ABLATIONS.md."""
    lines = [
        f"{time.strftime('%Y-%m-%d')}: `{command}` ({summary['seeds']} seeds, "
        f"{summary['minutes']:.1f} min)",
        "",
        "| variant | probe | mIoU | change | mIoU corrupted frames | change | mVC_8 | change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, probes in summary["probes"].items():
        for probe, r in probes.items():
            lines.append(
                f"| `{name}` | {probe} | {r['miou']:.2f} | {r['delta']:+.2f} ± "
                f"{r['delta_std']:.2f} | {r['miou_corrupted']:.2f} | "
                f"{r['delta_corrupted']:+.2f} ± {r['delta_corrupted_std']:.2f} | "
                f"{r['mvc8']:.2f} | {r['delta_mvc8']:+.2f} ± {r['delta_mvc8_std']:.2f} |"
            )
    lines += ["", "Change = probed - as trained, mean ± sample std over seeds, in points."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="the ablation's output folder")
    p.add_argument("--quick", action="store_true", help="probe the quick run")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--write-doc", action="store_true", help="write the table into ABLATIONS.md")
    args = p.parse_args(argv)
    if args.quick and args.write_doc:
        p.error("--write-doc records the full run's probes only; drop --quick")
    budget = QUICK if args.quick else FULL
    out = Path(args.out or ROOT / budget["out"])
    seeds = args.seeds or budget["seeds"]
    start = time.perf_counter()
    jobs = [(v, "no_history") for v in VIDEO_VARIANTS]
    jobs += [(v, "memory_permuted") for v in MEMORY_VARIANTS]
    probes: dict[str, dict] = {}
    for name, probe in jobs:
        pairs = []
        for seed in range(seeds):
            run_dir = out / "runs" / name / f"seed{seed}"
            result_file = run_dir / "result.json"
            if not result_file.is_file():
                raise SystemExit(f"{run_dir}: not finished; run bench/ablation.py first")
            cfg = variant_config(name, out / "data", seed, budget["iters"], budget["overrides"])
            kept = out / "probes" / name / f"seed{seed}" / f"{probe}.json"
            if kept.is_file() and kept.stat().st_mtime >= result_file.stat().st_mtime:
                probed = json.loads(kept.read_text())
            else:
                probed = probe_run(cfg, run_dir, probe)
                kept.parent.mkdir(parents=True, exist_ok=True)
                kept.write_text(json.dumps(probed))
            pairs.append((probed, json.loads(result_file.read_text())))
            print(f"{name} seed {seed} {probe}: {probed}", file=sys.stderr, flush=True)
        probes.setdefault(name, {})[probe] = summarise(pairs)
    summary = {"probes": probes, "seeds": seeds, "minutes": (time.perf_counter() - start) / 60}
    if args.write_doc:
        from bench.ablation_doc import replace_block

        doc = ROOT / "docs" / "ABLATIONS.md"
        command = "PYTHONPATH=. python bench/ablation_probes.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        text = replace_block(
            doc.read_text(encoding="utf-8"), "probes", probes_block(summary, command)
        )
        doc.write_text(text, encoding="utf-8")
    print(json.dumps(_finite(summary, 3)))
    return summary


assert set(VIDEO_VARIANTS + MEMORY_VARIANTS) <= set(VARIANTS)

if __name__ == "__main__":
    main()
