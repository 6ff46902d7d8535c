"""The bad-input matrix: every sub-command, given bad input, ends with one line naming the culprit,
a documented exit code (docs/RELIABILITY.md), no traceback, and nothing lost on disk.

One row per case: the command line (a template over the shared fixtures), an optional setup that
plants the bad input in the case's folder, the exit code, the texts the one `error:` / `partial:`
line must hold, and what survives. By default a case must leave its folder exactly as the setup
left it (nothing created, nothing touched); `kept` instead checks what a stopped run keeps. The
shared fixtures (dataset, checkpoints, trained run, video) must be untouched by every case.

Runs in-process through `vidseg.cli.main` (file-descriptor capture, so native library output
counts too). The cases that need a child process (SIGKILL, SIGINT, a file-size limit) are in
test_stream_safety.py and test_train_safety.py; the API-level error checks in test_errors.py.
"""

from __future__ import annotations

import logging
import pickle
import re
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from tests import _bad_input_setups as setups
from tests._small_models import TINY_32PX
from tests._video_fixtures import write_video
from vidseg.cli import main
from vidseg.data.synthetic import make_synthetic_vspw

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "synthetic"
SMALL = TINY_32PX
ERROR_LINE = re.compile(r"^vidseg(?: [a-z]+)*: (?:error|partial): ")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@dataclass(frozen=True)
class Case:
    """One bad input: `cmd` and `names` are templates over the fixtures (`{tmp}`, `{data}`...)."""

    cmd: str
    code: int
    names: tuple[str, ...]
    setup: Callable | None = None  # (env) -> extra placeholders, e.g. {"culprit": path}
    kept: Callable | None = None  # (env) -> None: what a stopped run keeps; None = nothing written
    report: bool = False  # `data check`: the culprit is in the report on stdout, not an error line


def case(id_: str, cmd: str, code: int, *names: str, marks=(), **kwargs):
    return pytest.param(Case(cmd, code, names, **kwargs), id=id_, marks=marks)


class _NotWeights:
    """A pickled object that weights_only loading must refuse."""


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> SimpleNamespace:
    """Dataset, frames, videos, bad checkpoints and one trained run, made once."""
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("shared")
    e = SimpleNamespace(
        tiny=CONFIGS / "tiny.yaml",
        light=CONFIGS / "stream_light.yaml",
        data=base / "data",
        frames=base / "frames",
        ck=base / "ck",
        run=base / "run",
        file=base / "afile",
        video=base / "clip.mp4",
    )
    make_synthetic_vspw(
        e.data,
        num_train=2,
        num_val=2,
        num_test=0,
        frames=4,
        height=48,
        width=64,
        write_mp4=False,
        workers=1,
    )
    e.frames.mkdir()
    for k in range(2):
        cv2.imwrite(str(e.frames / f"{k:05d}.png"), np.full((48, 64, 3), 40 * k, np.uint8))
    write_video(e.video, n=30, h=48, w=64, fps=5, faststart=True, noise=True)
    e.file.write_text("a file, not a folder\n")
    e.ck.mkdir()
    (e.ck / "empty.pth").write_bytes(b"")
    torch.save({"model": {"w": torch.zeros(3)}}, e.ck / "foreign.pth")
    whole = (e.ck / "foreign.pth").read_bytes()
    (e.ck / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    (e.ck / "text.pth").write_text("not a checkpoint\n" * 20)
    torch.save({"model": _NotWeights()}, e.ck / "object.pth")
    with open(e.ck / "pickle.pth", "wb") as f:  # a plain pickle, not a torch.save zip
        pickle.dump({"model": _NotWeights()}, f)
    save_file({"foo": torch.zeros(2)}, str(e.ck / "foreign.safetensors"))
    (e.ck / "broken.safetensors").write_bytes(b"\x00garbage")
    code = main(
        [
            "train",
            str(e.tiny),
            "--work-dir",
            str(e.run),
            "--set",
            f"data.root={e.data}",
            "train.iters=1",
            "train.ckpt_interval=1",
            *SMALL,
        ]
    )
    assert code == 0 and (e.run / "best.pth").is_file()
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        e.refused_url = f"http://127.0.0.1:{s.getsockname()[1]}/cam.mjpg"
    silent = socket.socket()  # accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    e.stalled_url = f"http://127.0.0.1:{silent.getsockname()[1]}/cam.mjpg"
    yield e
    silent.close()


def _tree(*roots: Path) -> dict[str, tuple[int, int] | None]:
    """Every file and folder under `roots`: a file -> (size, mtime_ns), which a write changes;
    a folder -> None (its mtime also moves when a refused run removes what it created)."""
    out = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            st = path.stat()
            out[str(path)] = (st.st_size, st.st_mtime_ns) if path.is_file() else None
    return out


CKPTS = [
    ("missing", "not found"),
    ("empty", "empty (0 bytes)"),
    ("truncated", "truncated or corrupt"),
    ("text", "not a torch.save file"),
    ("object", "_NotWeights"),
    ("pickle", "weights_only"),
    ("foreign", "none of this model's"),
    ("foreign.safetensors", "none of this model's"),
    ("broken.safetensors", "not a valid .safetensors"),
]


def _ckpt(name: str) -> str:
    return "{ck}/" + (name if name.endswith(".safetensors") else f"{name}.pth")


CKPT_CMDS = {
    "stream": "stream {tiny} {frames} --out {tmp}/o --quiet",
    "eval": "eval {tiny} --data {data} --out {tmp}/o --no-tc",
    "export": "export {tiny} --onnx {tmp}/m.onnx --no-check",
}
STREAM = "stream {tiny} {frames} --random-init --quiet --out {tmp}/o"
LIGHT = "stream {light} --random-init --quiet --short-side 32 --out {tmp}/o"
EVAL = "eval {tiny} --random-init --data {data} --out {tmp}/o --no-tc"
EXPORT = "export {tiny} --random-init --onnx {tmp}/m.onnx --no-check"
TRAIN = "train {tiny} --work-dir {tmp}/run --set data.root={data}"
SCORE = "score --data {data} --pred {tmp}/pred --quiet --no-tc"


def convert(src: str) -> str:
    return f"convert sssegmentation {src} {{tmp}}/out.pth --config {{tiny}}"


CASES = [
    # info, configs, plot
    case("info-unknown-option", "info --bogus", 2, "--bogus"),
    case("no-command", "", 2, "COMMAND"),
    case("configs-no-match", "configs zzz-no-such", 1, "'zzz-no-such'"),
    case("configs-unknown-option", "configs --bogus", 2, "--bogus"),
    case("plot-missing-run", "plot {tmp}/nope", 2, "{tmp}/nope", "no such run folder"),
    case("plot-no-scalars", "plot {data}", 2, "{data}", "no scalars.jsonl"),
    case(
        "plot-garbage-scalars",
        "plot {tmp}/r",
        2,
        "{tmp}/r/scalars.jsonl",
        "unreadable",
        setup=setups.garbage_scalars,
    ),
    case("plot-out-is-folder", "plot {run} --out {tmp}", 2, "--out {tmp}", "is a folder"),
    case("plot-out-under-file", "plot {run} --out {file}/c.png", 2, "{file}", "not a folder"),
    # data synth / check / convert
    case("synth-out-is-file", "data synth --out {file}", 2, "--out {file}", "is a file"),
    case("synth-out-under-file", "data synth --out {file}/d", 2, "{file}", "not a folder"),
    case("synth-frames-0", "data synth --out {tmp}/s --frames 0", 2, "--frames", "got 0"),
    case("synth-height-huge", "data synth --out {tmp}/s --height 100000", 2, "--height", "4096"),
    case("synth-into-other-folder", "data synth --out {frames}", 2, "{frames}", "not empty"),
    case("check-missing-root", "data check {tmp}/nope", 2, "{tmp}/nope", "does not exist"),
    case("check-root-is-file", "data check {file}", 2, "{file}", "is a file"),
    case("check-json-is-folder", "data check {tmp} --json {tmp}", 2, "--json", "is a folder"),
    case("check-negative-count", "data check {data} --max-problems -1", 2, "--max-problems"),
    case(
        "check-unpaired-video",
        "data check {tmp}/data",
        1,
        "{culprit}",
        "REFUSED",
        "NOT USABLE",
        setup=setups.missing_mask,
        report=True,
    ),
    case(
        "convert-missing-src",
        "data convert {tmp}/nope --out {tmp}/o --format video",
        2,
        "{tmp}/nope",
        "does not exist",
    ),
    case(
        "convert-src-is-file",
        "data convert {file} --out {tmp}/o --format video",
        2,
        "{file}",
        "is a file",
    ),
    case(
        "convert-out-is-file",
        "data convert {data} --out {file} --format frames",
        2,
        "--out {file}",
        "is a file",
    ),
    case(
        "convert-out-not-empty",
        "data convert {data} --out {frames} --format frames",
        2,
        "{frames}",
        "not empty",
    ),
    case(
        "convert-unpaired-video",
        "data convert {tmp}/data --out {tmp}/o --format video",
        2,
        "{culprit}",
        "without mask",
        setup=setups.missing_mask,
    ),
    # train
    case(
        "train-existing-run",
        "train {tiny} --work-dir {run} --set data.root={data}",
        2,
        "{run}",
        "--resume",
        "--overwrite",
    ),
    case("train-resume-and-overwrite", TRAIN + " --resume --overwrite", 2, "--overwrite"),
    case("train-resume-nothing", TRAIN + " --resume", 2, "--resume", "{tmp}/run"),
    case(
        "train-resume-truncated",
        TRAIN + " --resume {ck}/truncated.pth",
        2,
        "{ck}/truncated.pth",
        "truncated or corrupt",
    ),
    case(
        "train-resume-foreign",
        TRAIN + " --resume {ck}/foreign.pth",
        2,
        "{ck}/foreign.pth",
        "not a vidseg training checkpoint",
    ),
    case(
        "train-work-dir-is-file",
        "train {tiny} --work-dir {file}",
        2,
        "--work-dir {file}",
        "is a file",
    ),
    case("train-missing-config", "train {tmp}/nope.yaml", 2, "nope.yaml", "packaged config"),
    case("train-unknown-key", TRAIN + " train.nope=1", 2, "train.nope", "unknown key"),
    case(
        "train-missing-root",
        "train {tiny} --work-dir {tmp}/run --set data.root={tmp}/nope",
        2,
        "{tmp}/nope",
        "does not exist",
    ),
    case(
        "train-root-is-file",
        "train {tiny} --work-dir {tmp}/run --set data.root={file}",
        2,
        "{file}",
        "is a file",
    ),
    case(
        "train-not-a-vspw-root",
        "train {tiny} --work-dir {tmp}/run --set data.root={frames}",
        2,
        "{frames}",
        "missing train.txt",
    ),
    case(
        "train-empty-split",
        "train {tiny} --work-dir {tmp}/run --set data.root={tmp}/data",
        2,
        "no videos",
        setup=setups.empty_split("train"),
    ),
    *[
        case(f"train-config-{key}", TRAIN + f" {key}={value}", 2, f"--set {key}", key)
        for key, value in [
            ("model.num_classes", "0"),
            ("train.lr", "-1"),
            ("train.lr", ".nan"),
            ("train.iters", "0"),
            ("data.batch_size", "0"),
            ("data.crop_size", "[4,4]"),
            ("train.ckpt_interval", "0"),
            ("model.memory.momentum", "1.5"),
            ("data.num_workers", "-1"),
            ("data.short_side", "100000"),
        ]
    ],
    case(
        "train-bad-val-mask",
        "train {tiny} --work-dir {tmp}/run --set data.root={tmp}/data "
        "train.iters=1 " + " ".join(SMALL),
        3,
        "{culprit}",
        "outside the VSPW range",
        setup=setups.bad_label,
        kept=setups.kept_checkpoint,
    ),
    # eval
    *[
        case(
            f"eval-checkpoint-{name}",
            CKPT_CMDS["eval"] + " --checkpoint " + _ckpt(name),
            2,
            _ckpt(name),
            text,
        )
        for name, text in CKPTS
    ],
    case(
        "eval-other-model",
        "eval {tiny} --checkpoint {run} --data {data} --out {tmp}/o",
        2,
        "{run}",
        "different model",
        "model.channels",
    ),
    case("eval-checkpoint-and-random", EVAL + " --checkpoint {run}", 2, "--random-init"),
    case("eval-no-checkpoint", "eval {tiny} --data {data} --out {tmp}/o", 2, "--checkpoint"),
    case(
        "eval-cuda-without-gpu",
        EVAL + " --device cuda",
        2,
        "'cuda'",
        "CUDA is not available",
        marks=NO_CUDA,
    ),
    case("eval-max-videos-negative", EVAL + " --max-videos -1", 2, "--max-videos", "-1"),
    case("eval-tc-videos-negative", EVAL + " --tc-videos -1", 2, "--tc-videos", "-1"),
    case(
        "eval-out-is-file",
        "eval {tiny} --checkpoint {tmp}/nope.pth --data {tmp}/nope --out {file}",
        2,
        "--out {file}",
        "is a file",
    ),  # the output is checked first
    case(
        "eval-metrics-is-folder",
        EVAL,
        2,
        "{tmp}/o/metrics.json",
        "is a folder",
        setup=setups.metrics_folder,
    ),
    case(
        "eval-missing-root",
        "eval {tiny} --random-init --data {tmp}/nope --out {tmp}/o",
        2,
        "{tmp}/nope",
        "does not exist",
    ),
    case(
        "eval-empty-split",
        "eval {tiny} --random-init --data {tmp}/data --out {tmp}/o",
        2,
        "{tmp}/data",
        "split val lists no videos",
        setup=setups.empty_split("val"),
    ),
    case(
        "eval-unpaired-video",
        "eval {tiny} --random-init --data {tmp}/data --out {tmp}/o",
        2,
        "{culprit}",
        "without mask",
        setup=setups.missing_mask,
    ),
    case(
        "eval-bad-label",
        "eval {tiny} --random-init --data {tmp}/data --out {tmp}/o --no-tc",
        2,
        "{culprit}",
        "[200]",
        setup=setups.bad_label,
        kept=setups.kept_no_metrics,
    ),
    case(
        "eval-truncated-frame",
        "eval {tiny} --random-init --data {tmp}/data --out {tmp}/o --no-tc",
        0,
        "{culprit}",
        "truncated JPEG",
        setup=setups.truncated_frame,
        kept=setups.kept_metrics_with_unreadable,
    ),
    case(
        "eval-prediction-write-fails",
        EVAL,
        3,
        "{culprit}",
        "write failed",
        setup=setups.blocked_predictions,
        kept=setups.kept_first_video_predictions,
    ),
    # score
    case("score-tc-videos-negative", SCORE + " --tc-videos -2", 2, "--tc-videos", "-2"),
    case("score-workers-negative", SCORE + " --workers -1", 2, "--workers", "-1"),
    case("score-workers-huge", SCORE + " --workers 100000", 2, "--workers", "CPU cores"),
    case("score-out-is-folder", SCORE + " --out {tmp}", 2, "--out {tmp}", "is a folder"),
    case("score-out-under-file", SCORE + " --out {file}/m.json", 2, "{file}", "not a folder"),
    case(
        "score-missing-root",
        "score --data {tmp}/nope --pred {tmp}/pred --quiet",
        2,
        "{tmp}/nope",
        "not found",
        setup=setups.predictions(),
    ),
    case("score-missing-pred-folder", SCORE, 2, "{tmp}/pred", "not found"),
    case(
        "score-missing-split",
        SCORE + " --split nosplit",
        2,
        "nosplit.txt",
        "not found",
        setup=setups.predictions(),
    ),
    case(
        "score-missing-prediction",
        SCORE,
        2,
        "{culprit}",
        "missing",
        setup=setups.predictions("missing"),
    ),
    case(
        "score-prediction-value", SCORE, 2, "{culprit}", "[200]", setup=setups.predictions("value")
    ),
    case("score-prediction-size", SCORE, 2, "{culprit}", "20x20", setup=setups.predictions("size")),
    case(
        "score-prediction-not-png",
        SCORE,
        2,
        "{culprit}",
        "not a PNG",
        setup=setups.predictions("notpng"),
    ),
    case(
        "score-bad-ground-truth",
        "score --data {tmp}/data --pred {tmp}/pred --quiet --no-tc",
        2,
        "{culprit}",
        "[200]",
        setup=setups.predictions(data=setups.bad_label),
    ),
    case("score-raft-without-weights", SCORE + " --flow raft", 2, "--raft-weights"),
    case(
        "score-raft-empty-weights",
        "score --data {data} --pred {tmp}/pred --quiet --flow raft --raft-weights {ck}/empty.pth",
        2,
        "{ck}/empty.pth",
        "empty (0 bytes)",
        setup=setups.predictions(),
    ),
    case(
        "score-keeps-earlier-metrics",
        SCORE + " --out {tmp}/m.json",
        2,
        "{culprit}",
        "missing",
        setup=lambda e: {**setups.existing_file("m.json")(e), **setups.predictions("missing")(e)},
    ),
    # stream
    *[
        case(
            f"stream-checkpoint-{name}",
            CKPT_CMDS["stream"] + " --checkpoint " + _ckpt(name),
            2,
            _ckpt(name),
            text,
        )
        for name, text in CKPTS
    ],
    case(
        "stream-other-model",
        "stream {light} {frames} --checkpoint {run} --out {tmp}/o",
        2,
        "{run}",
        "different model",
    ),
    case("stream-no-checkpoint", "stream {tiny} {frames} --out {tmp}/o", 2, "--random-init"),
    case("stream-checkpoint-and-random", STREAM + " --checkpoint {run}", 2, "exclude"),
    case(
        "stream-cuda-without-gpu",
        STREAM + " --device cuda",
        2,
        "'cuda'",
        "--device cpu",
        marks=NO_CUDA,
    ),
    case("stream-unknown-device", STREAM + " --device gpu0", 2, "'gpu0'", "cpu, cuda, cuda:N"),
    case(
        "stream-short-side-below-stride",
        STREAM + " --short-side 9 --set model.backbone.output_stride=32",
        2,
        "short side 9",
        "network stride 32",
    ),
    case("stream-short-side-huge", STREAM + " --short-side 100000", 2, "--short-side", "4096"),
    case("stream-threads-huge", STREAM + " --threads 10000", 2, "--threads", "CPU cores"),
    case("stream-threads-0", STREAM + " --threads 0", 2, "--threads"),
    case("stream-stride-negative", STREAM + " --stride -2", 2, "--stride", "-2"),
    case("stream-max-frames-0", STREAM + " --max-frames 0", 2, "--max-frames"),
    case("stream-scales-0", STREAM + " --scales 0,1", 2, "--scales", "'0,1'"),
    case("stream-scales-without-hmsa", STREAM + " --scales 0.5,1.0", 2, "--scales 0.5,1.0", "HMSA"),
    case("stream-timeout-0", STREAM + " --timeout 0", 2, "--timeout", "got 0"),
    case(
        "stream-extreme-aspect",
        "stream {tiny} {tmp}/strip --random-init --quiet --short-side 64 --out {tmp}/o",
        2,
        "8x1200 frame at short side 64",
        "64x9600",
        setup=setups.strip_frame,
    ),
    case("stream-no-arguments", "stream", 2, "vidseg stream", "required", "--help"),
    case(
        "stream-out-is-file",
        "stream {tiny} {tmp}/nope.mp4 --random-init --out {file}",
        2,
        "--out {file}",
        "is a file",
    ),
    case("stream-json-under-file", STREAM + " --json {file}/s.json", 2, "{file}", "not a folder"),
    case("stream-json-is-folder", STREAM + " --json {tmp}", 2, "--json {tmp}", "is a folder"),
    case(
        "stream-missing-video",
        "stream {tiny} {tmp}/nope.mp4 --random-init --out {tmp}/o",
        2,
        "{tmp}/nope.mp4",
        "no such",
    ),
    case(
        "stream-empty-video",
        "stream {tiny} {tmp}/bad.mp4 --random-init --out {tmp}/o",
        2,
        "{tmp}/bad.mp4",
        "not a readable video",
        setup=setups.broken_video(b""),
    ),
    case(
        "stream-garbage-video",
        "stream {tiny} {tmp}/bad.mp4 --random-init --out {tmp}/o",
        2,
        "{tmp}/bad.mp4",
        "not a readable video",
        setup=setups.broken_video(b"no video" * 64),
    ),
    case(
        "stream-empty-folder",
        "stream {tiny} {tmp}/f --random-init --out {tmp}/o",
        2,
        "{tmp}/f",
        "no images",
        setup=setups.folder("f"),
    ),
    case(
        "stream-missing-camera",
        "stream {tiny} 97 --random-init --out {tmp}/o",
        2,
        "camera 97",
        "could not open",
    ),
    case(
        "stream-refused-url",
        "stream {tiny} {refused_url} --random-init --out {tmp}/o",
        2,
        "{refused_url}",
        "could not open stream URL",
    ),
    case(
        "stream-stalled-url",
        "stream {tiny} {stalled_url} --random-init --out {tmp}/o --timeout 1",
        2,
        "{stalled_url}",
        "timed out",
        "1 s",
    ),
    case(
        "stream-truncated-video",
        LIGHT.replace("stream {light}", "stream {light} {tmp}/cut.mp4")
        + " --labels --json {tmp}/s.json",
        3,
        "{tmp}/cut.mp4",
        "corrupt data after",
        setup=setups.cut_video,
        kept=setups.kept_partial_stream,
    ),
    case(
        "stream-unreadable-frames",
        LIGHT.replace("stream {light}", "stream {light} {tmp}/f") + " --labels",
        0,
        "{tmp}/f/00002.jpg",
        "truncated JPEG",
        "{tmp}/f/00003.jpg",
        "empty (0 bytes)",
        setup=setups.bad_frames,
        kept=setups.kept_good_frames,
    ),
    # demo
    *[
        case(f"demo-{flag[2:]}-{value}", f"demo --out {{tmp}}/demo {flag} {value}", 2, *names)
        for flag, value, names in [
            ("--iters", "-1", ("--iters", "-1")),
            ("--iters", "many", ("--iters", "'many'")),
            ("--seed", "-3", ("--seed",)),
            ("--config", "no/such_config", ("no/such_config",)),
            ("--set", "model.num_classes=0", ("model.num_classes",)),
            ("--set", "train.nope=1", ("train.nope",)),
            ("--set", "novalue", ("novalue",)),
        ]
    ],
    case("demo-out-is-file", "demo --out {file}", 2, "--out {file}", "is a file"),
    # export
    *[
        case(
            f"export-checkpoint-{name}",
            CKPT_CMDS["export"] + " --checkpoint " + _ckpt(name),
            2,
            _ckpt(name),
            text,
        )
        for name, text in CKPTS
    ],
    case("export-no-checkpoint", "export {tiny} --onnx {tmp}/m.onnx", 2, "--checkpoint"),
    case("export-checkpoint-and-random", EXPORT + " --checkpoint {run}", 2, "exclude"),
    case("export-size-below-stride", EXPORT + " --size 7 9", 2, "7x9", "network stride 8"),
    case("export-size-huge", EXPORT + " --size 4000 4000", 2, "--size 4000 4000", "input limit"),
    case("export-check-frames-0", EXPORT + " --check-frames 0", 2, "--check-frames"),
    case("export-tolerance-nan", EXPORT + " --tolerance nan", 2, "--tolerance"),
    case("export-opset-0", EXPORT + " --opset 0", 2, "--opset"),
    case(
        "export-onnx-under-file",
        "export {tiny} --random-init --onnx {file}/m.onnx",
        2,
        "--onnx {file}/m.onnx",
        "not a folder",
    ),
    case(
        "export-onnx-is-folder",
        "export {tiny} --random-init --onnx {tmp}",
        2,
        "--onnx {tmp}",
        "is a folder",
    ),
    case("export-json-is-folder", EXPORT + " --json {tmp}", 2, "--json {tmp}", "is a folder"),
    case(
        "export-bad-config-value", EXPORT + " --set model.num_classes=0", 2, "model.num_classes=0"
    ),
    # convert (the authors' weights)
    case("convert-missing-source", convert("{ck}/missing.pth"), 2, "{ck}/missing.pth", "not found"),
    case("convert-empty-source", convert("{ck}/empty.pth"), 2, "{ck}/empty.pth", "empty (0 bytes)"),
    case("convert-pickle-source", convert("{ck}/pickle.pth"), 2, "{ck}/pickle.pth", "weights_only"),
    case(
        "convert-foreign-source",
        convert("{ck}/foreign.pth"),
        2,
        "{ck}/foreign.pth",
        "not sssegmentation's",
    ),
    case(
        "convert-vidseg-checkpoint",
        convert("{run}/best.pth"),
        2,
        "{run}/best.pth",
        "not sssegmentation's",
    ),
    case(
        "convert-dst-is-folder",
        "convert sssegmentation {ck}/missing.pth {tmp} --config {tiny}",
        2,
        "DST {tmp}",
        "is a folder",
    ),
    case(
        "convert-keeps-existing-dst",
        "convert sssegmentation {ck}/truncated.pth {tmp}/out.pth --config {tiny}",
        2,
        "{ck}/truncated.pth",
        "truncated or corrupt",
        setup=setups.existing_file("out.pth"),
    ),
    case(
        "convert-bad-config",
        "convert sssegmentation {run}/best.pth {tmp}/out.pth --config {tmp}/nope.yaml",
        2,
        "nope.yaml",
    ),
]


def _run(argv: list[str]) -> int:
    """`vidseg ARGV` in this process; parser errors exit through SystemExit."""
    handlers = logging.root.handlers[:]
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code
    finally:  # `stream` configures logging on the stream of this case's capture: undo it
        logging.root.handlers[:] = handlers


@pytest.mark.parametrize("c", CASES)
def test_bad_input(c: Case, shared, tmp_path, capfd, caplog):
    e = SimpleNamespace(**vars(shared), tmp=tmp_path)
    extra = c.setup(e) if c.setup else {}
    values = {k: str(v) for k, v in {**vars(e), **extra}.items()}
    before, fixtures = _tree(tmp_path), _tree(shared.data, shared.frames, shared.ck, shared.run)
    code = _run(shlex.split(c.cmd.format_map(values)))
    out, err = capfd.readouterr()
    logged = caplog.text  # warnings: pytest holds the root logger (the CLI prints them)
    names = [name.format_map(values) for name in c.names]

    assert "Traceback" not in err and "usage:" not in err, err
    assert code == c.code, err[-2000:]
    lines = [x for x in re.split(r"[\r\n]", err) if ERROR_LINE.match(x)]
    if c.code == 0 or c.report:  # handled: the culprit is named in a warning or the report
        assert not lines, lines
        for name in names:
            assert name in (out if c.report else err + logged), (name, out, err, logged)
    else:
        assert len(lines) == 1, err[-2000:]
        for name in names:
            assert name in lines[0], (name, lines[0])
    if c.kept is None:
        assert _tree(tmp_path) == before, "the refused command wrote or changed files"
    else:
        c.kept(e)
    assert _tree(shared.data, shared.frames, shared.ck, shared.run) == fixtures
