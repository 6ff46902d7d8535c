"""Parameter counts and GFLOPs of every VSPW config, measured by running the model.

FLOPs are those of one streaming `step()` on a 512x512 frame (one backbone pass; IIS stages as
configured), counted by `torch.utils.flop_counter.FlopCounterMode` (a multiply-add = 2 FLOPs;
the attention products inside `scaled_dot_product_attention` are counted too). Prints a
markdown table for docs/MODELS.md and, last, one JSON line.

    python bench/model_zoo.py [--size 512] [--configs configs/vspw/*.yaml]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from vidseg.config import load_config  # noqa: E402
from vidseg.models.build import build_model  # noqa: E402

# VSPW val mIoU reported by the MCIBI++ paper (Tables 16-17) for the same setting, where one exists.
GRID_PAPER = {
    ("upernet", "vector", "resnet101", 0): "42.11 (Table 17)",
    ("upernet", "vector", "swin_l", 0): "55.18 (Table 17)",
    ("upernet", "distribution", "resnet50", 0): "41.08 (Table 16)",
    ("upernet", "distribution", "resnet101", 0): "43.21 (Table 17)",
    ("upernet", "distribution", "swin_l", 0): "56.04 (Table 17)",
    ("upernet", "distribution", "resnet50", 2): "42.39 (Table 16)",
    ("upernet", "vector", "swin_l", 2): "57.57 (Table 17, Video-MCIBI)",
    ("upernet", "distribution", "swin_l", 2): "58.88 (Table 17)",
}
BACKBONES = {
    "resnet50": ["model.backbone.name=resnet50", "model.backbone.output_stride=8"],
    "resnet101": ["model.backbone.name=resnet101", "model.backbone.output_stride=8"],
    "swin_l": ["model.backbone.name=swin_large_patch4_window12_384", "model.backbone.output_stride=32",
               "model.backbone.img_size=[512, 512]"],
}
PAPER = {
    "upernet_mcibipp_r50.yaml": "41.08 (Table 16)",
    "upernet_video_mcibipp_r50.yaml": "42.39 (Table 16, h = 2)",
    "upernet_mcibipp_r101.yaml": "43.21 (Table 17)",
    "upernet_mcibipp_swinl.yaml": "56.04 (Table 17)",
    "upernet_video_mcibipp_swinl.yaml": "58.88 (Table 17)",
}


def measure(path: str, size: int, overrides=(), name: str | None = None) -> dict:
    cfg = load_config(path, ["model.backbone.pretrained=false", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    frame = torch.randn(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    start = time.perf_counter()
    with counter, torch.no_grad():
        model.step(frame, None)
    return {"config": name or os.path.basename(path), "backbone": cfg.model.backbone.name,
            "context": cfg.model.context, "memory": cfg.model.memory.type, "history": cfg.model.history,
            "params_m": round(params / 1e6, 2), "gflops": round(counter.get_total_flops() / 1e9, 1),
            "cpu_s": round(time.perf_counter() - start, 2), "paper_miou": PAPER.get(os.path.basename(path), "-")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--configs", nargs="*", default=sorted(glob.glob("configs/vspw/*.yaml")))
    parser.add_argument("--grid", action="store_true",
                        help="every context x {no memory, MCIBI, MCIBI++} x {R50, R101, Swin-L} (+ video UperNet)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.grid:
        rows = []
        base = "configs/vspw/upernet_mcibipp_r50.yaml"
        for bb, bb_over in BACKBONES.items():
            for ctx in ("none", "ppm", "aspp", "gald", "upernet"):
                for mem in ("none", "vector", "distribution"):
                    for h in ((0, 2) if ctx == "upernet" and mem != "none" else (0,)):
                        over = [*bb_over, f"model.context={ctx}", f"model.memory.type={mem}", f"model.history={h}"]
                        if mem == "none":
                            over.append("model.history_source=r")
                        label = f"{ctx}+{ {'none': 'baseline', 'vector': 'MCIBI', 'distribution': 'MCIBI++'}[mem]}" \
                                f"{' video h=2' if h else ''} / {bb}"
                        row = measure(base, args.size, over, label)
                        row["paper_miou"] = GRID_PAPER.get((ctx, mem, bb, h), "-")
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    else:
        rows = [measure(p, args.size) for p in args.configs]
    print(f"| config | backbone | context | memory | h | params (M) | GFLOPs @ {args.size}² | "
          "paper VSPW mIoU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['backbone']} | {r['context']} | {r['memory']} | {r['history']} | "
              f"{r['params_m']} | {r['gflops']} | {r['paper_miou']} |")
    print(json.dumps({"size": args.size, "models": rows}))


if __name__ == "__main__":
    main()
