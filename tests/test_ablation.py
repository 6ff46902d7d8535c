"""Ablation benchmark (bench/ablation.py) and the hard synthetic preset, on a tiny budget."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vidseg.data.synthetic import CLASS_FILE, MANIFEST
from vidseg.data.synthetic_hard import (
    CORRUPTED_FILE,
    CORRUPTIONS,
    GROUND,
    TWINS,
    _add_twins,
    corrupt,
    corruption_plan,
    hard_class_ids,
    make_hard_synthetic_vspw,
    read_corrupted,
)
from vidseg.data.synthetic_scene import Scene
from vidseg.data.vspw import load_class_names, read_split

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_train=2, num_val=1, num_test=1, frames=6, height=32, width=48, seed=0)
# the smallest model and data every variant accepts (HMSA's 0.5 scale needs 32 px for stride 16)
TINY = {
    "model": {
        "channels": 16,
        "key_channels": 8,
        "aux_channels": 8,
        "backbone": {"pretrained": False},
        "hmsa": {"channels": 8},
    },
    "data": {"short_side": 32, "crop_size": [32, 32], "batch_size": 2, "num_workers": 0},
    "train": {"log_interval": 1, "ckpt_interval": 2},
}


def _load_bench(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ablation = _load_bench("ablation")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny tensors: a second OpenMP thread only adds synchronisation, which on a busy 2-core
    # machine costs seconds per iteration
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hard") / "ds"
    make_hard_synthetic_vspw(out, **SMALL, write_mp4=False, workers=2)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_hard_preset_is_deterministic_and_marks_corrupted_frames(root, tmp_path):
    again = tmp_path / "again"
    make_hard_synthetic_vspw(again, **SMALL, write_mp4=False, workers=1)
    assert _files(root) == _files(again)
    other = tmp_path / "other"
    make_hard_synthetic_vspw(other, **{**SMALL, "seed": 1}, write_mp4=False)
    assert read_split(other, "train") != read_split(root, "train")

    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["preset"] == "hard" and manifest["expected"]["val"]["masks"] == 6
    names = load_class_names(root)
    assert all(names[raw - 1] == name for name, raw in hard_class_ids().items())
    assert json.loads((root / CLASS_FILE).read_text())["others"] == 0
    from vidseg.data.check import check_vspw

    assert check_vspw(root).ok
    listed = json.loads((root / CORRUPTED_FILE).read_text())["videos"]
    every = sum((read_split(root, s) for s in ("train", "val", "test")), [])
    assert sorted(listed) == sorted(every)
    for video in every:
        stems = sorted(p.stem for p in (root / "data" / video / "origin").iterdir())
        assert listed[video], f"{video} has no corrupted frame"
        for item in listed[video]:
            # never the first two frames, so a corrupted frame always has clean history
            assert 2 <= item["index"] < 6 and item["kind"] in CORRUPTIONS
            assert stems[item["index"]] == item["stem"]
    assert read_corrupted(root) == {v: {i["index"] for i in items} for v, items in listed.items()}


@pytest.mark.parametrize("fmt", ["vspw", "frames"])
def test_cli_preset_hard(fmt, tmp_path, capsys):
    from vidseg.cli import main

    out = tmp_path / fmt
    args = [
        "data",
        "synth",
        "--preset",
        "hard",
        "--out",
        str(out),
        "--format",
        fmt,
        "--frames",
        "4",
        "--height",
        "32",
        "--width",
        "48",
        "--train-videos",
        "1",
        "--val-videos",
        "1",
        "--test-videos",
        "0",
        "--no-mp4",
    ]
    assert main(args) == 0 and "(hard preset)" in capsys.readouterr().out
    listed = json.loads((out / CORRUPTED_FILE).read_text())["videos"]
    names = (out / "train.txt").read_text().split() + (out / "val.txt").read_text().split()
    assert len(names) == 2 and sorted(listed) == sorted(names)


def test_twins_relabel_only_what_their_cue_allows():
    ids = hard_class_ids()
    ground = [ids[g] for g in GROUND]
    drawn = set()
    for seed in range(40):
        rng = np.random.default_rng((seed, 0))
        scene = Scene(rng, 4, 72, 128, ids)
        before = scene.labels.copy()
        twins = _add_twins(rng, scene, ids)
        drawn |= set(twins)
        labels = scene.labels
        if "haze" in twins:  # all of the sky or none of it
            assert (
                not (labels == ids["sky"]).any()
                and (before[labels == ids["haze"]] == ids["sky"]).all()
            )
        if "floor" in twins:  # only indoors, and only on ground
            assert (labels == ids["wall"]).any() and np.isin(
                before[labels == ids["floor"]], ground
            ).all()
        if "hedge" in twins:  # painted on ground only, never where trees grow
            assert np.isin(before[labels == ids["hedge"]], ground).all()
        assert set(twins) == {t for t in TWINS if (labels == ids[t]).any()}
    assert drawn == set(TWINS)


def test_corruptions_do_what_they_say():
    rng = np.random.default_rng(0)
    plan = corruption_plan(rng, 30, 48, 64, 1.0)
    assert plan[0] is None and plan[1] is None and sum(c is not None for c in plan) >= 3
    rgb = rng.uniform(0, 255, (48, 64, 3)).astype(np.float32)
    assert corrupt(rng, rgb, 0.0, 2.0, {"kind": "noise", "sigma": 40.0})[2] == 40.0
    assert corrupt(rng, rgb, 0.5, 2.0, {"kind": "blur", "sigma": 4.0})[1] == 4.0
    mask = np.zeros((48, 64), bool)
    mask[10:20, 10:30] = True
    colour = np.array([100, 120, 140], np.float32)
    veiled = corrupt(rng, rgb, 0.0, 0.0, {"kind": "occlusion", "mask": mask, "colour": colour})[0]
    np.testing.assert_allclose(veiled[mask], 0.85 * colour + 0.15 * rgb[mask], rtol=1e-5)
    assert (veiled[~mask] == rgb[~mask]).all()
    dropped = corrupt(rng, rgb, 0.0, 0.0, {"kind": "dropout", "block": 8, "p": 1.0})[0]
    cell = dropped[8:16, 16:24]
    np.testing.assert_allclose(
        cell, np.broadcast_to(rgb[8:16, 16:24].mean((0, 1)), cell.shape), rtol=1e-5
    )


def _memory_buffers(model) -> dict[str, torch.Tensor]:
    memory = model.image_model.memory
    return {} if memory is None else {k: v.clone() for k, v in memory.state_dict().items()}


# what each row must build: (context module, FPN, memory class, history, history source,
# inference stages, scales)
EXPECTED = {
    "fcn": (None, False, None, 0, "cbi", 1, (1.0,)),
    "upernet": ("PPM", True, None, 0, "cbi", 1, (1.0,)),
    "upernet_mcibi": ("PPM", True, "VectorMemory", 0, "cbi", 1, (1.0,)),
    "upernet_mcibipp": ("PPM", True, "DistributionMemory", 0, "cbi", 1, (1.0,)),
    "upernet_mcibipp_iis": ("PPM", True, "DistributionMemory", 0, "cbi", 2, (1.0,)),
    "video_h1_cbi": ("PPM", True, "DistributionMemory", 1, "cbi", 2, (1.0,)),
    "video_h2_cbi": ("PPM", True, "DistributionMemory", 2, "cbi", 2, (1.0,)),
    "video_h2_r": ("PPM", True, "DistributionMemory", 2, "r", 2, (1.0,)),
    "gald_ldv2": ("GALDHead", False, None, 0, "cbi", 1, (1.0,)),
    "hmsa_2scale": ("PPM", True, "DistributionMemory", 0, "cbi", 2, (0.5, 1.0)),
}


def test_expected_table_covers_every_variant():
    assert set(EXPECTED) == set(ablation.VARIANTS)
    assert all(
        a in ablation.VARIANTS and b in ablation.VARIANTS
        for a, b, _, _ in ablation.DIRECTIONS.values()
    )


@pytest.mark.parametrize("name", list(EXPECTED))
def test_variant_builds_trains_and_updates_its_memory(name, root, tmp_path):
    from vidseg.engine.train import train
    from vidseg.models.build import build_model

    cfg = ablation.variant_config(name, root, seed=0, iters=2, extra=TINY)
    seen = {}

    def factory(cfg):
        seen["model"] = model = build_model(cfg)
        seen["before"] = _memory_buffers(model)
        return model

    result = train(cfg, work_dir=tmp_path / name, model_factory=factory)
    assert result["iterations"] == 2 and math.isfinite(result["loss"])
    model, (context, fpn, memory, history, source, stages, scales) = seen["model"], EXPECTED[name]
    image = model.image_model
    assert (type(image.context).__name__ if image.context is not None else None) == context
    assert (image.fpn is not None) == fpn
    assert (type(image.memory).__name__ if image.memory is not None else None) == memory
    assert (model.history, model.history_source, image.iis_stages, model.scales) == (
        history,
        source,
        stages,
        scales,
    )
    if memory is not None:  # the class memory was written by the training iterations
        after = _memory_buffers(model)
        main = "stats" if memory == "DistributionMemory" else "memory"
        assert not torch.equal(seen["before"][main], after[main])
        assert after["seen"].any() and not seen["before"]["seen"].any()


def test_run_is_scored_kept_and_skipped(root, tmp_path, monkeypatch):
    cfg = ablation.variant_config("video_h2_cbi", root, seed=0, iters=2, extra=TINY)
    run_dir = tmp_path / "run"
    result = ablation.run_one(cfg, run_dir)
    for key in ablation.METRICS:
        assert key in result
    assert 0 <= result["miou"] <= 100 and 0 <= result["miou_corrupted"] <= 100
    assert (run_dir / "eval" / "metrics.json").is_file()

    import vidseg.engine.train

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(vidseg.engine.train, "train", refuse)
    assert ablation.run_one(cfg, run_dir) == result
    other = ablation.variant_config("video_h2_cbi", root, seed=1, iters=2, extra=TINY)
    with pytest.raises(SystemExit, match="another config"):
        ablation.run_one(other, run_dir)


def test_frame_scores_on_hand_made_masks(tmp_path):
    from vidseg.data.synthetic_hard import hard_class_table

    root, pred = tmp_path / "root", tmp_path / "pred"
    ids = hard_class_ids()
    (root / "data" / "v" / "mask").mkdir(parents=True)
    (pred / "v").mkdir(parents=True)
    (root / "val.txt").write_text("v\n")
    (root / CLASS_FILE).write_text(json.dumps(hard_class_table()))
    (root / CORRUPTED_FILE).write_text(
        json.dumps(
            {
                "videos": {
                    "v": [
                        {"index": 1, "stem": "00000002", "kind": "noise"},
                        {"index": 2, "stem": "00000003", "kind": "blur"},
                    ]
                }
            }
        )
    )
    # rows: haze, sky, floor, road
    raw = np.repeat(np.array([ids["haze"], ids["sky"], ids["floor"], ids["road"]], np.uint8), 4)
    raw = raw.reshape(4, 4)
    train_ids = raw - 1
    swapped = np.where(raw == ids["haze"], ids["sky"], raw)  # haze called sky, floor called road
    swapped = np.where(swapped == ids["floor"], ids["road"], swapped) - 1
    for k in range(3):
        cv2.imwrite(str(root / "data" / "v" / "mask" / f"0000000{k + 1}.png"), raw)
        # frame 0 (clean) is all wrong; the corrupted frames 1 and 2 follow `swapped`
        cv2.imwrite(
            str(pred / "v" / f"0000000{k + 1}.png"),
            np.full_like(raw, ids["car"] - 1) if k == 0 else swapped.astype(np.uint8),
        )
    scores = ablation.score_frames(root, pred, "val", 124)
    # corrupted frames: sky and road IoU 4/8 (their pixels plus the twins'), haze and floor 0
    assert scores["miou_corrupted"] == pytest.approx(100 * (0.5 + 0.5) / 4)
    # each twin: all its pixels went to its base (1), none of the base's to it (0); frame 0's
    # pixels went to "car", so each side counts 2 of 3 frames: (2/3 + 0) / 2
    assert scores["twin_confusion"] == pytest.approx(100 / 3)
    for k in range(3):
        cv2.imwrite(str(pred / "v" / f"0000000{k + 1}.png"), train_ids.astype(np.uint8))
    assert ablation.score_frames(root, pred, "val", 124) == {
        "miou_corrupted": 100.0,
        "twin_confusion": 0.0,
    }


def test_summary_and_directions_on_hand_made_numbers():
    def run(miou, mvc8=80.0):
        return {
            "miou": miou,
            "mvc8": mvc8,
            "mvc16": 70.0,
            "tc": 60.0,
            "miou_corrupted": miou - 5,
            "twin_confusion": 10.0,
            "s_per_iter": 1.0,
            "train_seconds": 60.0,
            "eval_seconds": 30.0,
        }

    results = {name: [run(40.0), run(42.0), run(44.0)] for name in ablation.VARIANTS}
    results["upernet"] = [run(30.0), run(31.0), run(32.0)]
    results["video_h2_cbi"] = [run(42.0, 85.0), run(43.0, 86.0), run(44.0, 87.0)]
    results["video_h2_r"] = results["video_h2_cbi"]
    variants = ablation.summarise(results)
    assert (
        variants["upernet_mcibipp"]["miou"] == 42.0
        and variants["upernet_mcibipp"]["miou_std"] == 2.0
    )
    assert variants["fcn"]["run_minutes"] == pytest.approx(4.5)
    d = ablation.directions(variants)
    assert d["mcibipp_gt_baseline"] == pytest.approx(
        {
            "reproduced": True,
            "delta": 11.0,
            "beyond_seed_spread": True,
            "spread": math.hypot(2, 1),
            "claim": "upernet_mcibipp > upernet in miou",
        }
    )
    # equal means: ">=" holds, ">" does not, and neither is beyond the spread
    assert d["iis_ge_none"]["reproduced"] is True and d["iis_ge_none"]["delta"] == 0.0
    assert d["cbi_gt_r_history"]["reproduced"] is False and d["cbi_gt_r_history"]["delta"] == 0.0
    assert d["cbi_gt_r_history"]["beyond_seed_spread"] is False
    # a gain smaller than the spread of the two variants (hypot(1, 2))
    more = d["more_history_ge_fewer"]
    assert (
        more["reproduced"] is True and more["delta"] == 1.0 and more["beyond_seed_spread"] is False
    )
    assert (
        d["video_h2_gt_image_mvc8"]["delta"] == 6.0
        and d["video_h2_gt_image_mvc8"]["beyond_seed_spread"]
    )
    assert set(d) == set(ablation.DIRECTIONS)
    # float noise below the 0.01 points the tables show does not decide a ">=" claim
    variants["upernet_mcibipp_iis"]["miou"] -= 0.003
    assert ablation.directions(variants)["iis_ge_none"]["reproduced"] is True
    variants["upernet_mcibipp_iis"]["miou"] -= 0.01
    assert ablation.directions(variants)["iis_ge_none"]["reproduced"] is False


def test_doc_blocks_are_replaced_in_place(tmp_path):
    doc = _load_bench("ablation_doc")
    page = tmp_path / "ABLATIONS.md"
    page.write_text(
        "intro\n<!-- ablation:variants:start -->\nold\n<!-- ablation:variants:end -->\n"
        "<!-- ablation:results:start -->\nnot yet\n<!-- ablation:results:end -->\n"
        "<!-- ablation:quick:start -->\nnone\n<!-- ablation:quick:end -->\noutro\n"
    )
    row = {k: 1.0 for k in ablation.METRICS} | {f"{k}_std": 0.5 for k in ablation.METRICS}
    summary = {
        "variants": {"fcn": row | {"s_per_iter": 2.0}},
        "seeds": 2,
        "iters": 6,
        "minutes": 3.0,
        "wall_minutes": 3.5,
        "machine": "test",
        "load_end": 1.0,
        "directions": {
            "x": {
                "claim": "a > b in miou",
                "delta": 1.0,
                "spread": 0.2,
                "reproduced": True,
                "beyond_seed_spread": True,
            }
        },
    }
    doc.write_results(page, summary, ablation.VARIANTS, "bench/ablation.py --quick", quick=True)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "not yet" in text
    assert "Quick smoke run" in text and "| `fcn` | 1.00 ± 0.50 |" in text
    assert "`model.context=none model.memory.type=none`" in text
