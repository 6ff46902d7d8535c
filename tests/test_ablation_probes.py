"""Test-time probes of the ablation runs (bench/ablation_probes.py), on a tiny budget."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from tests.test_ablation import SMALL, TINY
from vidseg.data.synthetic_hard import make_hard_synthetic_vspw
from vidseg.models.build import build_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
spec = importlib.util.spec_from_file_location("ablation_probes", REPO / "bench/ablation_probes.py")
probes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probes)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hard") / "ds"
    make_hard_synthetic_vspw(out, **SMALL, write_mp4=False, workers=2)
    return out


@pytest.mark.parametrize("name", ["upernet_mcibipp", "upernet_mcibi"])
def test_permute_memory_shifts_the_seen_rows_only(name, root):
    from bench.ablation import variant_config

    model = build_model(variant_config(name, root, seed=0, iters=2, extra=TINY)).eval()
    memory = model.image_model.memory
    seen = torch.tensor([3, 7, 11])
    with torch.no_grad():
        for buf in (memory.stats if name.endswith("pp") else memory.memory,):
            buf.copy_(torch.randn_like(buf))
        memory.seen[seen] = True
    before = model.image_model.sample_memory() if name.endswith("pp") else memory.memory.clone()
    assert probes.permute_memory(model) == 3
    after = model.image_model.sample_memory() if name.endswith("pp") else memory.memory
    # row 7 now holds what row 3 held, 11 what 7 held, 3 what 11 held; the unseen rows stay
    assert torch.equal(after[seen], before[seen.roll(1)])
    unseen = torch.ones(len(after), dtype=torch.bool)
    unseen[seen] = False
    assert torch.equal(after[unseen], before[unseen])


def test_permute_memory_refuses_a_model_without_memory(root):
    from bench.ablation import variant_config

    model = build_model(variant_config("upernet", root, seed=0, iters=2, extra=TINY))
    with pytest.raises(ValueError, match="no memory"):
        probes.permute_memory(model)


def test_probes_run_on_a_finished_run(root, tmp_path):
    from bench.ablation import run_one, variant_config

    cfg = variant_config("video_h2_cbi", root, seed=0, iters=2, extra=TINY)
    trained = run_one(cfg, tmp_path / "run")
    for probe in ("no_history", "memory_permuted"):
        got = probes.probe_run(cfg, tmp_path / "run", probe)
        assert set(got) == {"miou", "mvc8", "miou_corrupted"}
        assert 0 <= got["miou"] <= 100 and 0 <= got["miou_corrupted"] <= 100
        assert math.isnan(got["mvc8"])  # 6-frame videos have no window of 8
    row = probes.summarise([(got, trained)])
    assert row["delta"] == pytest.approx(got["miou"] - trained["miou"])
    assert "| `x` | memory_permuted |" in probes.probes_block(
        {"probes": {"x": {"memory_permuted": row}}, "seeds": 1, "minutes": 0.1}, "cmd"
    )
