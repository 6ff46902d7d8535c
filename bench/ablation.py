"""Ablations in miniature (issue 13): does each part of the method help on the hard synthetic set?

Trains and evaluates every variant of `VARIANTS` with the same data, budget and seeds, on the
hard synthetic preset (`vidseg.data.synthetic_hard`, docs/ABLATIONS.md), then reports per
variant the mean and std over seeds of mIoU, mVC_8, mVC_16, TC-DIS, the mIoU of the corrupted
frames alone and the twin-class confusion (all in %), and for each of the paper's directions
whether it reproduced, by how much, and whether the difference exceeds the seed spread
(|delta| > sqrt(std_a^2 + std_b^2)).

Every variant is the base config (`synthetic/demo`'s light EfficientNet-Lite0 at output stride
16 with ImageNet weights, plus `BASE`) with the overrides of its row, so variants differ only
where they should. Runs live in `<out>/runs/<variant>/seed<k>/`; a run whose `result.json`
exists is kept and skipped, an interrupted one resumes from its last checkpoint, so the command
can be rerun until it completes. A finished run made with another config or dataset is refused.

Usage:
  PYTHONPATH=. python bench/ablation.py --write-doc          # the full table (~2 h on 2 cores)
  PYTHONPATH=. python bench/ablation.py --quick               # smoke run, < 10 min
Options: --out DIR, --seeds N, --variants a,b, --iters N, --write-doc.
Last line: {"variants": {NAME: {"miou", "miou_std", ...}}, "directions": {NAME: {"reproduced",
"delta", "beyond_seed_spread", ...}}, "seeds", "minutes", ...}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_CONFIG = "synthetic/demo"
# shared by every variant: image UperNet + MCIBI++ with one inference stage (the paper's image
# baseline of Table 16); the variants below change only their own keys
BASE = {
    "model": {"context": "upernet", "history": 0, "iis_stages": 1},
    "data": {"num_workers": 1},
    "train": {"log_interval": 10, "ckpt_interval": 40, "keep_checkpoints": 1, "validate": False},
    "eval": {"tc": True},
}
NO_MEMORY = {"memory": {"type": "none"}}
VARIANTS = {
    "fcn": (
        "FCN baseline: no within-image context, no memory",
        {"model": {"context": "none", **NO_MEMORY}},
    ),
    "upernet": ("UperNet baseline (PPM + FPN), no memory", {"model": NO_MEMORY}),
    "upernet_mcibi": (
        "+ MCIBI: vector memory (momentum 0.9, poly)",
        {"model": {"memory": {"type": "vector", "momentum": 0.9}}},
    ),
    "upernet_mcibipp": ("+ MCIBI++: distribution memory, 1 inference stage", {}),
    "upernet_mcibipp_iis": ("+ IIS: 2 inference stages", {"model": {"iis_stages": 2}}),
    "video_h1_cbi": (
        "Video-MCIBI++, h = 1, C_bi history",
        {"model": {"iis_stages": 2, "history": 1}},
    ),
    "video_h2_cbi": (
        "Video-MCIBI++, h = 2, C_bi history",
        {"model": {"iis_stages": 2, "history": 2}},
    ),
    "video_h2_r": (
        "Video-MCIBI++, h = 2, R history (Table 16)",
        {"model": {"iis_stages": 2, "history": 2, "history_source": "r"}},
    ),
    "gald_ldv2": (
        "GALD (ASPP global aggregation + LDv2) instead of UperNet, no memory",
        {"model": {"context": "gald", "gald": {"ld": "v2"}, **NO_MEMORY}},
    ),
    "hmsa_2scale": (
        "+ IIS + HMSA over scales 0.5 and 1.0",
        {
            "model": {
                "iis_stages": 2,
                "hmsa": {"enabled": True, "scales": [0.5, 1.0], "train_low_scale": 0.5},
            }
        },
    ),
}
IMAGE = "upernet_mcibipp_iis"
# name -> (variant a, variant b, metric, relation): the paper says a `relation` b
DIRECTIONS = {
    "mcibipp_gt_baseline": ("upernet_mcibipp", "upernet", "miou", ">"),
    "distribution_ge_vector": ("upernet_mcibipp", "upernet_mcibi", "miou", ">="),
    "iis_ge_none": ("upernet_mcibipp_iis", "upernet_mcibipp", "miou", ">="),
    "video_h2_gt_image_miou": ("video_h2_cbi", IMAGE, "miou", ">"),
    "video_h2_gt_image_mvc8": ("video_h2_cbi", IMAGE, "mvc8", ">"),
    "video_h2_gt_image_mvc16": ("video_h2_cbi", IMAGE, "mvc16", ">"),
    "video_h2_gt_image_corrupted": ("video_h2_cbi", IMAGE, "miou_corrupted", ">"),
    "cbi_gt_r_history": ("video_h2_cbi", "video_h2_r", "miou", ">"),
    "more_history_ge_fewer": ("video_h2_cbi", "video_h1_cbi", "miou", ">="),
}
METRICS = ("miou", "mvc8", "mvc16", "tc", "miou_corrupted", "twin_confusion")
# dataset, iterations and seeds of the full run and of the smoke run
FULL = {
    "data": dict(num_train=32, num_val=8, num_test=0, frames=24, height=144, width=256),
    "iters": 100,
    "seeds": 3,
    "out": "work_dirs/ablation",
    "overrides": {},
}
QUICK = {
    "data": dict(num_train=6, num_val=2, num_test=0, frames=18, height=96, width=160),
    "iters": 6,
    "seeds": 2,
    "out": "work_dirs/ablation_quick",
    "overrides": {
        "data": {"short_side": 96, "crop_size": [64, 64], "batch_size": 4, "num_workers": 0}
    },
}


def variant_config(
    name: str,
    data_root: str | os.PathLike,
    seed: int,
    iters: int,
    extra: dict | None = None,
    base: str = BASE_CONFIG,
):
    """The resolved `Config` of one variant: base config + `BASE` + `extra` + the variant's row."""
    from vidseg.api import section_overrides
    from vidseg.config import load_config

    sections = [
        BASE,
        extra or {},
        VARIANTS[name][1],
        {"data": {"root": os.fspath(data_root)}, "train": {"iters": iters, "seed": seed}},
    ]
    return load_config(base, [o for s in sections for o in section_overrides(s)])


def ensure_dataset(root: Path, params: dict) -> Path:
    """Write the hard preset at `root` unless a dataset with the same parameters is there."""
    from vidseg.data.synthetic import MANIFEST
    from vidseg.data.synthetic_hard import HARD_VERSION, make_hard_synthetic_vspw

    manifest = root / MANIFEST
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if (
            found.get("preset") == "hard"
            and found.get("version") == HARD_VERSION
            and found.get("seed") == 0
            and all(found["parameters"].get(k) == v for k, v in params.items())
        ):
            return root
    make_hard_synthetic_vspw(root, **params, seed=0, write_mp4=False)
    return root


def _run_signature(cfg) -> str:
    """Hash of what a run's numbers depend on: the config (but where its files live) and the
    dataset's manifest (generator version and parameters)."""
    from vidseg.config import config_to_dict
    from vidseg.data.synthetic import MANIFEST

    tree = config_to_dict(cfg)
    tree.pop("work_dir")
    root = tree["data"].pop("root")
    manifest = json.loads((Path(root) / MANIFEST).read_text())
    text = json.dumps([tree, manifest], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def score_frames(root: Path, pred_dir: Path, split: str, num_classes: int) -> dict:
    """mIoU of the corrupted frames alone and the twin-class confusion, from prediction PNGs.

    Returns `miou_corrupted` (official mIoU over the corrupted frames of the split) and
    `twin_confusion`: per twin class, the mean of (share of its pixels predicted as the classes
    it copies) and (share of theirs predicted as it), over the sides present in the ground truth,
    averaged over the twins with a side present; in %.
    """
    import cv2

    from vidseg.data.image_files import to_train_ids
    from vidseg.data.synthetic_hard import TWINS, read_corrupted
    from vidseg.data.vspw import load_class_names, read_split
    from vidseg.metrics.segmentation import ConfusionMatrix

    corrupted = read_corrupted(root)
    every, bad = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    for video in read_split(root, split):
        masks = sorted((root / "data" / video / "mask").glob("*.png"))
        for index, path in enumerate(masks):
            gt = to_train_ids(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), path)
            pred = cv2.imread(str(pred_dir / video / path.name), cv2.IMREAD_UNCHANGED)
            if pred is None:
                raise FileNotFoundError(f"no prediction {pred_dir / video / path.name}")
            every.update(gt, pred)
            if index in corrupted.get(video, ()):
                bad.update(gt, pred)
    names = load_class_names(root)
    m = every.matrix.astype(np.float64)
    shares = []
    for twin, (bases, _) in TWINS.items():
        t, b = names.index(twin), [names.index(x) for x in bases]
        sides = [m[t, b].sum() / m[t].sum()] if m[t].sum() else []
        sides += [m[b][:, t].sum() / m[b].sum()] if m[b].sum() else []
        if sides:
            shares.append(float(np.mean(sides)))
    return {
        "miou_corrupted": 100 * bad.compute()["miou"],
        "twin_confusion": 100 * float(np.mean(shares)) if shares else float("nan"),
    }


def run_one(cfg, run_dir: Path) -> dict:
    """Train (or resume) and evaluate one run; returns its result (also in `result.json`)."""
    import torch

    from vidseg.engine.checkpoint import find_latest
    from vidseg.engine.evaluate import evaluate
    from vidseg.engine.inference import load_inference_model
    from vidseg.engine.train import run_dir_contents, train

    result_file, digest = run_dir / "result.json", _run_signature(cfg)
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        if result.get("signature") != digest:
            raise SystemExit(
                f"{run_dir} holds a finished run of another config or dataset; use "
                "another --out or move that run away"
            )
        return result
    resume = "latest" if find_latest(run_dir) else None
    train(
        cfg,
        resume=resume,
        work_dir=run_dir,
        overwrite=resume is None and bool(run_dir_contents(run_dir)),
    )
    # from the log, so that a resumed run counts the iterations of every session
    rows = [json.loads(line) for line in (run_dir / "scalars.jsonl").read_text().splitlines()]
    iter_times = [r["iter_time"] for r in rows if "iter_time" in r]
    s_per_iter = statistics.mean(iter_times) if iter_times else None
    _, model = load_inference_model(cfg, run_dir)
    t1 = time.perf_counter()
    threads = torch.get_num_threads()
    # one 144 px frame is too little work for a second OpenMP thread; on a busy machine the
    # two threads' synchronisation made the step 7x slower (0.14 vs 1.07 s per frame, measured)
    torch.set_num_threads(1)
    try:
        metrics = evaluate(model, cfg, out_dir=run_dir / "eval", save_pred=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    extra = score_frames(
        Path(cfg.data.root), run_dir / "eval" / "pred", cfg.eval.split, cfg.model.num_classes
    )
    result = {
        "miou": 100 * metrics["miou"],
        "mvc8": 100 * metrics["mvc8"],
        "mvc16": 100 * metrics["mvc16"],
        "tc": 100 * metrics["tc"],
        **extra,
        "s_per_iter": s_per_iter,
        "train_seconds": (s_per_iter or 0.0) * cfg.train.iters,
        "eval_seconds": time.perf_counter() - t1,
        "signature": digest,
    }
    # strict JSON (an undefined metric, e.g. mVC_16 of shorter videos, is null)
    result_file.write_text(json.dumps(_finite(result), indent=1))
    return json.loads(result_file.read_text())


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0 for a single seed) of the finite values; NaN when none."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(results: dict[str, list[dict]]) -> dict:
    """Per variant: mean and std over seeds of every metric, and seconds per iteration."""
    out = {}
    for name, runs in results.items():
        row = {}
        for key in METRICS:
            row[key], row[f"{key}_std"] = _mean_std([r[key] for r in runs])
        row["s_per_iter"] = _mean_std([r["s_per_iter"] for r in runs])[0]
        row["run_minutes"] = sum(r["train_seconds"] + r["eval_seconds"] for r in runs) / 60
        out[name] = row
    return out


def directions(variants: dict) -> dict:
    """Each paper direction: delta = a - b (mean over seeds, in points, rounded to the 0.01 the
    tables show), reproduced (delta > 0 for ">", >= 0 for ">="), beyond_seed_spread
    (|delta| > sqrt(std_a^2 + std_b^2))."""
    out = {}
    for name, (a, b, metric, relation) in DIRECTIONS.items():
        if a not in variants or b not in variants:
            continue
        # rounded, so that float noise between identical predictions (a -0.003 point IIS
        # "loss" on an untrained model) does not decide a ">=" claim
        delta = round(variants[a][metric] - variants[b][metric], 2) + 0.0  # no "-0.00"
        spread = math.hypot(variants[a][f"{metric}_std"], variants[b][f"{metric}_std"])
        if not math.isfinite(delta):
            reproduced = beyond = None
        else:
            reproduced = bool(delta > 0) if relation == ">" else bool(delta >= 0)
            beyond = bool(abs(delta) > spread)
        out[name] = {
            "reproduced": reproduced,
            "delta": delta,
            "beyond_seed_spread": beyond,
            "spread": spread,
            "claim": f"{a} {relation} {b} in {metric}",
        }
    return out


def load_average() -> float:
    """1-minute load average (NaN where the system has none): other work slows every run."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine() -> str:
    import torch

    return (
        f"{platform.machine()} {os.cpu_count()} CPU cores ({platform.processor() or 'cpu'}), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, load average "
        f"{load_average():.1f} at the start"
    )


def _finite(tree, digits: int | None = None):
    """NaN / Inf as None (strict JSON), recursively; floats rounded to `digits` when given."""
    if isinstance(tree, float):
        return (tree if digits is None else round(tree, digits)) if math.isfinite(tree) else None
    if isinstance(tree, dict):
        return {k: _finite(v, digits) for k, v in tree.items()}
    return tree


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small data, 6 iterations")
    p.add_argument(
        "--out",
        help="where the dataset and runs go (default work_dirs/ablation, "
        "work_dirs/ablation_quick with --quick)",
    )
    p.add_argument("--seeds", type=int, help="seeds per variant (default 3, 2 with --quick)")
    p.add_argument("--variants", help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--iters", type=int, help="training iterations per run (default: the budget)")
    p.add_argument(
        "--write-doc",
        action="store_true",
        help="write the results into docs/ABLATIONS.md (the quick block with --quick)",
    )
    args = p.parse_args(argv)
    budget = QUICK if args.quick else FULL
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    seeds = args.seeds or budget["seeds"]
    iters = args.iters or budget["iters"]
    out = Path(args.out or ROOT / budget["out"])
    start, where = time.perf_counter(), machine()
    data_root = ensure_dataset(out / "data", budget["data"])
    results: dict[str, list[dict]] = {name: [] for name in names}
    # seed-major: every variant's first seed comes first, so a failing direction shows early
    for seed in range(seeds):
        for name in names:
            cfg = variant_config(name, data_root, seed, iters, budget["overrides"])
            r = run_one(cfg, out / "runs" / name / f"seed{seed}")
            results[name].append(r)
            shown = " ".join(
                f"{k} {r[k]:.2f}" if r[k] is not None else f"{k} n/a"
                for k in (*METRICS, "s_per_iter", "train_seconds", "eval_seconds")
            )
            print(f"{name} seed {seed}: {shown}", file=sys.stderr, flush=True)
    variants = summarise(results)
    summary = {
        "variants": variants,
        "directions": directions(variants),
        "seeds": seeds,
        "minutes": sum(v["run_minutes"] for v in variants.values()),
        "wall_minutes": (time.perf_counter() - start) / 60,
        "iters": iters,
        "quick": args.quick,
        "units": "percent",
        "machine": where,
        "load_end": load_average(),
    }
    if args.write_doc:
        from bench.ablation_doc import write_results

        command = "PYTHONPATH=. python bench/ablation.py " + " ".join(argv or sys.argv[1:])
        write_results(
            ROOT / "docs" / "ABLATIONS.md", summary, VARIANTS, command.strip(), quick=args.quick
        )
    print(json.dumps(_finite(summary, 3)))
    return summary


if __name__ == "__main__":
    main()
