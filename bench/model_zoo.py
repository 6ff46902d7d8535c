"""Parameter counts and GFLOPs of the shipped configs next to the authors', measured by running.

FLOPs are those of one streaming `step()` (one backbone pass; IIS stages as configured) on a
512x512 frame, counted by `torch.utils.flop_counter.FlopCounterMode` (a multiply-add = 2 FLOPs;
the attention products inside `scaled_dot_product_attention` are counted too). The models are
built on PyTorch's meta device: shapes and operation counts are exact, nothing is computed, so
the whole table takes seconds. Parameters count the class memory too (the authors store it as a
parameter, vidseg as a buffer), so both columns count the same tensors. The authors' counts
come from building their models with sssegmentation 1.7.0
(tests/fixtures/ssseg_architectures.json.gz, made by tests/fixtures/make_ssseg_arch_fixture.py).
Prints a markdown table for docs/MODELS.md and, last, one JSON line.

    python bench/model_zoo.py [--size 512] [--configs configs/vspw/*.yaml]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vidseg.config import load_config  # noqa: E402
from vidseg.models.build import build_model  # noqa: E402

# VSPW val mIoU of the MCIBI++ paper (Tables 16-17) and the authors' model zoo, same setting.
PAPER = {
    "upernet_mcibipp_r50": "41.08 (paper Table 16)",
    "upernet_video_mcibipp_r50": "42.39 (paper Table 16, h = 2)",
    "upernet_mcibipp_r101": "43.21 (zoo / Table 17)",
    "upernet_mcibipp_swinl": "56.04 (zoo / Table 17)",
    "upernet_video_mcibipp_swinl": "58.88 (paper Table 17, h = 2)",
}
# the authors' configs that the vidseg VSPW configs build (video = the same image model + history)
AUTHORS_NAME = {
    "upernet_mcibipp_r50": "mcibiplusplus_upernet_resnet50os8_vspw",
    "upernet_mcibipp_r101": "mcibiplusplus_upernet_resnet101os8_vspw",
    "upernet_mcibipp_swinl": "mcibiplusplus_upernet_swinlarge_vspw",
}
# the authors' forward GFLOPs at 512x512, measured with their code (reference/peer-sssegmentation.md)
AUTHORS_GFLOPS = {
    "mcibiplusplus_upernet_resnet50os8_vspw": 1325,
    "mcibiplusplus_upernet_resnet101os8_vspw": 1481,
}


def authors_params() -> dict:
    path = ROOT / "tests" / "fixtures" / "ssseg_architectures.json.gz"
    with gzip.open(path, "rt") as f:
        return {k: v["num_params"] for k, v in json.load(f)["configs"].items()}


def measure(path: str, size: int, theirs: dict) -> dict:
    cfg = load_config(path, ["model.backbone.pretrained=false"])
    with torch.device("meta"):
        model = build_model(cfg).eval()
        frame = torch.randn(1, 3, size, size)
    image = model.image_model
    memory = (
        sum(b.numel() for n, b in image.memory.named_buffers() if n in ("stats", "memory"))
        if image.memory is not None
        else 0
    )
    params = sum(p.numel() for p in model.parameters()) + memory
    aux = sum(p.numel() for p in image.aux_head.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.step(frame, None)
    stem = Path(path).stem
    authors = AUTHORS_NAME.get(stem.replace("_video", ""), stem)
    row = {
        "config": str(Path(path).relative_to(ROOT / "configs"))
        if Path(path).is_absolute()
        else path.replace("configs/", ""),
        "backbone": cfg.model.backbone.name,
        "history": cfg.model.history,
        "params": params,
        "params_without_aux": params - aux,
        "authors_params": theirs.get(authors) if cfg.model.history == 0 else None,
        "gflops": round(counter.get_total_flops() / 1e9, 1),
        "authors_gflops": AUTHORS_GFLOPS.get(authors) if cfg.model.history == 0 else None,
        "paper_miou": PAPER.get(stem, "-"),
    }
    if row["authors_params"]:
        row["params_ratio"] = round(params / row["authors_params"], 6)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--configs", nargs="*", default=sorted(glob.glob("configs/vspw/*.yaml")))
    args = parser.parse_args()
    theirs = authors_params()
    rows = [measure(p, args.size, theirs) for p in args.configs]
    print(
        f"| config | backbone | h | params | without aux | authors' params | GFLOPs @ {args.size}² "
        "| authors' GFLOPs | VSPW mIoU (authors) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ap = f"{r['authors_params']:,}" if r["authors_params"] else "-"
        print(
            f"| {r['config']} | {r['backbone']} | {r['history']} | {r['params']:,} | "
            f"{r['params_without_aux']:,} | {ap} | {r['gflops']} | {r['authors_gflops'] or '-'} | "
            f"{r['paper_miou']} |"
        )
    print(json.dumps({"size": args.size, "models": rows}))


if __name__ == "__main__":
    main()
