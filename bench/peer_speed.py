"""Speed and memory of vidseg's forward against the MCIBI++ authors' own (sssegmentation 1.7.0).

The authors-exact UperNet + MCIBI++ (`configs/vspw/upernet_mcibipp_r{50,101}.yaml`, their
`mcibiplusplus_upernet_resnet{50,101}os8_vspw`) runs on the same weights and the same input in two
fresh processes per input size: ours under this interpreter (`Segmenter.logits`: the product's
inference path, one `step()` of a first frame), theirs under the peer interpreter (their
`BuildSegmentor(cfg, mode='TEST')` and `model(SSSegInputStructure(images=x, mode='TEST'))` under
`torch.no_grad()`, as their tester does). Both processes stay loaded and take turns, one forward at
a time, alternating which goes first; each reports wall and CPU seconds per forward and its peak
RSS (the process's whole life: loading the checkpoint and the forwards). The outputs (logits on
the 1/4 grid) are compared as `bench/peer_parity.py` does: relative max difference and argmax
agreement. Float rounding alone moves the logits of this deep network (random weights) by ~1e-4
relative: their own output moves that much when the input changes by one ulp (measured per size,
`their_one_ulp_input_difference` and `..._differing_pixels`). `identical`: at most
max(1e-4, 3 x that) relative and at most max(0.01 %, 3 x their 1-ulp count) pixels with another
argmax (a pixel can only flip where their two best logits are closer than twice the largest
difference, a near-tie: `argmax_differing_margin`).

Weights: `--checkpoint` (their .pth, e.g. from `tests/fixtures/make_ssseg_full.py`), else their
model with random non-trivial weights and calibrated BatchNorm statistics is made by the peer
interpreter in a temporary folder (`randomise` of `tests/fixtures/make_ssseg_fixtures.py`). Ours
loads it converted by `vidseg convert sssegmentation`'s code.

    python bench/peer_speed.py --peer-python PEER_VENV/bin/python [--depth 101] [--reps 5]

The peer interpreter needs sssegmentation 1.7.0 (`reference/peer-sssegmentation.md`); without it
(or without `--peer-python` / `$VIDSEG_PEER_PYTHON`) this prints one line and exits 0. The last
line is JSON: `time_over_peer` and `rss_over_peer` (ours / theirs, the worst input size),
`identical`, and the per-size figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TAG = "@@peer_speed "  # prefix of the workers' protocol lines on stdout


# ------------------------------------------------------------------ worker side


def _rss_peak() -> int:
    """Peak resident set size of this process in bytes (VmHWM; ru_maxrss where /proc lacks it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _say(**fields) -> None:
    print(TAG + json.dumps(fields), flush=True)


def _their_model(depth: int, checkpoint: str | None):
    """Their TEST-mode segmentor; weights from `checkpoint` (their format) when given."""
    sys.path.insert(0, str(FIXTURES))
    from make_ssseg_full import cfg_vspw
    from ssseg.modules import BuildSegmentor

    model = BuildSegmentor(segmentor_cfg=cfg_vspw(depth), mode="TEST").eval()
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state), strict=True)
        del state
    return model


def _make_checkpoint(depth: int, out: str) -> None:
    """Their model with random non-trivial weights and calibrated BatchNorm statistics, saved as
    their checkpoint (`{'model': state_dict}`)."""
    sys.path.insert(0, str(FIXTURES))
    from make_ssseg_fixtures import make_image, randomise

    model = _their_model(depth, None)
    calib = torch.cat([normalise(make_image(256, 320, seed=s)) for s in (7, 8)])
    with torch.no_grad():
        randomise(model, seed=depth, calib_input=calib)
    torch.save({"model": model.state_dict()}, out)


def _forward_fn(args):
    """(callable x -> logits (1, K, H/4, W/4)) for this worker's side."""
    if args.worker == "theirs":
        from ssseg.modules.utils.datastructure import SSSegInputStructure

        model = _their_model(args.depth, args.checkpoint)

        def run(x):
            with torch.no_grad():
                return model(SSSegInputStructure(images=x, mode="TEST")).seg_logits

        return run
    sys.path.insert(0, str(ROOT))
    from vidseg import Segmenter

    seg = Segmenter(args.config, args.checkpoint)
    return seg.logits


def worker(args) -> int:
    """Load one side, then serve `run` / `save PATH` / `quit` lines from stdin."""
    torch.set_num_threads(args.threads)
    if args.worker == "make":
        _make_checkpoint(args.depth, args.out)
        return 0
    x = torch.load(args.input, weights_only=True)
    run = _forward_fn(args)
    _say(ready=True, rss_after_load=_rss_peak())
    out = None
    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        if cmd == "run":
            wall, cpu = time.perf_counter(), time.process_time()
            out = run(x)
            _say(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)
        elif cmd == "floor":  # how far a 1-ulp change of the input moves the output
            moved = run(x * (1 + 2**-23))
            rel = float((moved - out).abs().max() / out.abs().max())
            flipped = int((moved.argmax(1) != out.argmax(1)).sum())
            _say(relative_max_difference=rel, argmax_differing_pixels=flipped)
        elif cmd == "save":
            torch.save(out.float().contiguous(), rest)
            _say(saved=rest)
        elif cmd == "quit":
            _say(peak_rss=_rss_peak())
            return 0
    return 1


# ------------------------------------------------------------------ parent side


def compare(ours: torch.Tensor, theirs: torch.Tensor) -> dict:
    """Relative max difference and argmax agreement of two `(1, K, h, w)` logit maps.

    `argmax_differing_margin`: the largest gap between their two best logits at a pixel whose
    argmax differs, relative to their largest |logit| (0 when none differs); a pixel can only
    flip when that gap is below twice the largest difference, so these are near-ties.
    """
    if ours.shape != theirs.shape:
        raise SystemExit(
            f"output shapes differ: ours {tuple(ours.shape)}, theirs {tuple(theirs.shape)}"
        )
    scale = theirs.abs().max()
    differ = ours.argmax(1) != theirs.argmax(1)
    top2 = theirs.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1])[differ]
    return {
        "relative_max_difference": float((ours - theirs).abs().max() / scale),
        "argmax_agreement": float(1.0 - differ.float().mean()),
        "argmax_differing_pixels": int(differ.sum()),
        "argmax_differing_margin": float(margin.max() / scale) if margin.numel() else 0.0,
    }


class Worker:
    """One side's process: loaded once, then driven line by line."""

    def __init__(self, python: str, args: list[str], threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG) :])
        raise SystemExit(f"a worker ended early (exit status {self.proc.wait()})")

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> dict:
        reply = self.ask("quit")
        self.proc.wait()
        return reply


def peer_problem(python: str | None) -> str | None:
    """Why the peer interpreter cannot run their code (None when it can)."""
    if not python:
        return "no peer interpreter (--peer-python or $VIDSEG_PEER_PYTHON)"
    try:
        done = subprocess.run(
            [python, "-c", "import ssseg.modules"], capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} does not run ({type(exc).__name__})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"sssegmentation cannot be imported by {python}: {last}"
    return None


def normalise(rgb) -> torch.Tensor:
    """RGB uint8 `(H, W, 3)` -> `(1, 3, H, W)` float32 with the authors' (ImageNet) mean and std
    on 0-255 values."""
    x = torch.from_numpy(rgb).float().permute(2, 0, 1)[None]
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def make_input(h: int, w: int, path: Path) -> None:
    """The photo-like test image of the parity fixtures, normalised, saved for both sides."""
    sys.path.insert(0, str(FIXTURES))
    from make_ssseg_fixtures import make_image

    torch.save(normalise(make_image(h, w, seed=h * 7919 + w)), path)


def measure_size(args, size, ours_ckpt: Path, theirs_ckpt: Path, tmp: Path) -> dict:
    """Interleaved forwards of both sides at one input size, their peak RSS and the comparison."""
    h, w = size
    x_path = tmp / f"input_{h}x{w}.pt"
    make_input(h, w, x_path)
    common = ["--input", str(x_path), "--threads", str(args.threads), "--depth", str(args.depth)]
    sides = {
        "ours": Worker(
            sys.executable,
            ["--worker", "ours", "--config", args.config, "--checkpoint", str(ours_ckpt), *common],
            args.threads,
        ),
        "theirs": Worker(
            args.peer_python,
            ["--worker", "theirs", "--checkpoint", str(theirs_ckpt), *common],
            args.threads,
        ),
    }
    for worker_ in sides.values():
        worker_.read()  # ready
    times = {name: {"wall": [], "cpu": []} for name in sides}
    for rep in range(args.warmup + args.reps):
        order = ["ours", "theirs"] if rep % 2 == 0 else ["theirs", "ours"]
        for name in order:
            reply = sides[name].ask("run")
            if rep >= args.warmup:
                times[name]["wall"].append(reply["wall"])
                times[name]["cpu"].append(reply["cpu"])
    floor = sides["theirs"].ask("floor")
    outputs = {}
    for name, worker_ in sides.items():
        worker_.ask(f"save {tmp / f'{name}_{h}x{w}.pt'}")
        outputs[name] = torch.load(tmp / f"{name}_{h}x{w}.pt", weights_only=True)
    rss = {name: worker_.close()["peak_rss"] for name, worker_ in sides.items()}
    med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    row = {
        "ours_seconds": round(med["ours"]["wall"], 3),
        "theirs_seconds": round(med["theirs"]["wall"], 3),
        "time_over_peer": round(med["ours"]["wall"] / med["theirs"]["wall"], 3),
        "cpu_over_peer": round(med["ours"]["cpu"] / med["theirs"]["cpu"], 3),
        "ours_peak_rss_gb": round(rss["ours"] / 1e9, 3),
        "theirs_peak_rss_gb": round(rss["theirs"] / 1e9, 3),
        "rss_over_peer": round(rss["ours"] / rss["theirs"], 3),
        "ours_wall_all": [round(t, 3) for t in times["ours"]["wall"]],
        "theirs_wall_all": [round(t, 3) for t in times["theirs"]["wall"]],
    }
    row.update(compare(outputs["ours"], outputs["theirs"]))
    row["their_one_ulp_input_difference"] = floor["relative_max_difference"]
    row["their_one_ulp_input_differing_pixels"] = floor["argmax_differing_pixels"]
    row["identical"] = row["relative_max_difference"] <= max(
        1e-4, 3 * floor["relative_max_difference"]
    ) and row["argmax_differing_pixels"] <= max(
        1e-4 * outputs["theirs"][0, 0].numel(), 3 * floor["argmax_differing_pixels"]
    )
    return row


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default=os.environ.get("VIDSEG_PEER_PYTHON"))
    p.add_argument("--depth", type=int, choices=(50, 101), default=50)
    p.add_argument(
        "--config", default=None, help="default configs/vspw/upernet_mcibipp_r{depth}.yaml"
    )
    p.add_argument("--checkpoint", default=None, help="their .pth (default: random, made here)")
    p.add_argument("--sizes", default="512x512,480x853")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=("ours", "theirs", "make"), help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.config = args.config or str(ROOT / f"configs/vspw/upernet_mcibipp_r{args.depth}.yaml")
    if args.worker:
        return worker(args)
    problem = peer_problem(args.peer_python)
    if problem:
        print(f"peer_speed: skipped: {problem}")
        return 0
    sys.path.insert(0, str(ROOT))
    from vidseg.config import load_config
    from vidseg.convert.sssegmentation import convert

    with tempfile.TemporaryDirectory(prefix="peer_speed_") as tmp_name:
        tmp = Path(tmp_name)
        theirs_ckpt = Path(args.checkpoint) if args.checkpoint else tmp / "theirs.pth"
        if not args.checkpoint:
            made = subprocess.run(
                [
                    args.peer_python,
                    __file__,
                    "--worker",
                    "make",
                    "--depth",
                    str(args.depth),
                    "--out",
                    str(theirs_ckpt),
                    "--threads",
                    str(args.threads),
                ],
                cwd=ROOT,
            )
            if made.returncode != 0:
                raise SystemExit("peer_speed: making their random checkpoint failed")
        ours_ckpt = tmp / "ours.pth"
        convert(theirs_ckpt, ours_ckpt, load_config(args.config))
        sizes = {}
        for text in args.sizes.split(","):
            size = parse_size(text)
            sizes[f"{size[0]}x{size[1]}"] = row = measure_size(
                args, size, ours_ckpt, theirs_ckpt, tmp
            )
            print(f"{size[0]}x{size[1]}: " + json.dumps(row), flush=True)
    identical = all(r["identical"] for r in sizes.values())
    summary = {
        "config": os.path.relpath(args.config, ROOT),
        "threads": args.threads,
        "reps": args.reps,
        "time_over_peer": max(r["time_over_peer"] for r in sizes.values()),
        "cpu_over_peer": max(r["cpu_over_peer"] for r in sizes.values()),
        "rss_over_peer": max(r["rss_over_peer"] for r in sizes.values()),
        "identical": identical,
        "sizes": sizes,
    }
    print(json.dumps(summary))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
