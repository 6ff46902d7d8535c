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
PAPER = {
    "upernet_mcibipp_r50.yaml": "41.08 (Table 16)",
    "upernet_video_mcibipp_r50.yaml": "42.39 (Table 16, h = 2)",
    "upernet_mcibipp_r101.yaml": "43.21 (Table 17)",
    "upernet_mcibipp_swinl.yaml": "56.04 (Table 17)",
    "upernet_video_mcibipp_swinl.yaml": "58.88 (Table 17)",
}


def measure(path: str, size: int) -> dict:
    cfg = load_config(path, ["model.backbone.pretrained=false"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    frame = torch.randn(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    start = time.perf_counter()
    with counter, torch.no_grad():
        model.step(frame, None)
    return {"config": os.path.basename(path), "backbone": cfg.model.backbone.name,
            "context": cfg.model.context, "memory": cfg.model.memory.type, "history": cfg.model.history,
            "params_m": round(params / 1e6, 2), "gflops": round(counter.get_total_flops() / 1e9, 1),
            "cpu_s": round(time.perf_counter() - start, 2), "paper_miou": PAPER.get(os.path.basename(path), "-")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--configs", nargs="*", default=sorted(glob.glob("configs/vspw/*.yaml")))
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
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
