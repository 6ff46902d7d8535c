"""bench/peer_speed.py: skips cleanly without the authors' package; its output comparison."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "bench" / "peer_speed.py"


def _bench():
    spec = importlib.util.spec_from_file_location("peer_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def test_skips_when_sssegmentation_is_missing():
    # this interpreter (vidseg's own environment) has no sssegmentation
    done = _run("--peer-python", sys.executable)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("peer_speed: skipped: sssegmentation")


def test_skips_without_a_peer_interpreter():
    env = {k: v for k, v in os.environ.items() if k != "VIDSEG_PEER_PYTHON"}
    done = _run(env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "peer_speed: skipped: no peer interpreter (--peer-python or $VIDSEG_PEER_PYTHON)"
    )


def test_compare_reports_a_swapped_near_tie():
    bench = _bench()
    theirs = torch.zeros(1, 3, 2, 2)
    theirs[0, 0] = 2.0  # class 0 wins everywhere, by a hair over class 1 at (0, 0)
    theirs[0, 1, 0, 0] = 2.0 - 1e-6
    same = bench.compare(theirs.clone(), theirs)
    assert same["relative_max_difference"] == 0.0 and same["argmax_agreement"] == 1.0
    assert same["argmax_differing_pixels"] == 0 and same["argmax_differing_margin"] == 0.0
    ours = theirs.clone()
    ours[0, 1, 0, 0] = 2.0 + 1e-6  # rounding swaps the tie
    swapped = bench.compare(ours, theirs)
    assert swapped["argmax_differing_pixels"] == 1 and swapped["argmax_agreement"] == 0.75
    assert abs(swapped["relative_max_difference"] - 1e-6) < 1e-7
    assert abs(swapped["argmax_differing_margin"] - 0.5e-6) < 1e-7
    json.dumps(swapped)  # plain numbers only
