"""Full-size parity with the MCIBI++ authors' code: their weights, their logits, our forward.

Inputs come from `tests/fixtures/make_ssseg_full.py DIR` run in a throwaway environment
with sssegmentation 1.7.0 (random non-trivial weights, BatchNorm statistics and memory, saved as
an authors' checkpoint; a photo-like image; their TEST-mode logits). Nothing here imports
sssegmentation: the checkpoint goes through `vidseg convert sssegmentation`, then
`Segmenter.predict(image, return_logits=True)` is compared with their logits upsampled
bilinearly to the image size, as their inference does.

    python bench/peer_parity.py --config configs/vspw/upernet_mcibipp_r50.yaml \\
        --checkpoint DIR/mcibiplusplus_upernet_resnet50os8_vspw.pth \\
        --logits DIR/mcibiplusplus_upernet_resnet50os8_vspw_logits.pt --image DIR/image_512x1200.png

Prints one JSON line: relative max difference, argmax agreement, seconds of our forward.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True, help="the authors' .pth")
    parser.add_argument("--logits", required=True, help="their TEST-mode seg_logits (.pt)")
    parser.add_argument("--image", required=True, help="the RGB image they were computed on")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from vidseg import Segmenter
    from vidseg.config import load_config
    from vidseg.convert.sssegmentation import convert

    torch.set_num_threads(args.threads)
    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {args.image}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    theirs = torch.load(args.logits, map_location="cpu", weights_only=True)
    if isinstance(theirs, dict):
        theirs = theirs.get("logits", theirs.get("seg_logits"))
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "converted.pth"
        cfg = load_config(args.config, [f"data.eval_short_side={min(rgb.shape[:2])}"])
        t0 = time.perf_counter()
        convert(args.checkpoint, dst, cfg)
        convert_s = time.perf_counter() - t0
        seg = Segmenter(args.config, dst, overrides=[f"data.eval_short_side={min(rgb.shape[:2])}"])
        t0 = time.perf_counter()
        ours = torch.from_numpy(seg.predict(rgb, return_logits=True))
        forward_s = time.perf_counter() - t0
    up = F.interpolate(theirs.float(), size=rgb.shape[:2], mode="bilinear", align_corners=False)[0]
    rel = float((ours - up).abs().max() / up.abs().max())
    agree = float((ours.argmax(0) == up.argmax(0)).float().mean())
    print(
        json.dumps(
            {
                "config": args.config,
                "image": list(rgb.shape[:2]),
                "relative_max_difference": rel,
                "argmax_agreement": agree,
                "classes_predicted": int(up.argmax(0).unique().numel()),
                "convert_seconds": round(convert_s, 1),
                "forward_seconds": round(forward_s, 1),
                "threads": args.threads,
            }
        )
    )
    return 0 if rel < 1e-3 and agree >= 0.999 else 1


if __name__ == "__main__":
    raise SystemExit(main())
