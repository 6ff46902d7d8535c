"""Every ```python block of docs/API.md runs, as written and in order, in an empty folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """`(first line number, code)` of each ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_the_blocks_are_found():
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    calls = "".join(code for _, code in blocks)
    assert len(blocks) >= 6
    for call in ("vidseg.train(", "seg.predict(", "seg.stream(", "vidseg.score("):
        assert call in calls


@pytest.fixture
def one_thread():
    """One torch thread: on a small busy CPU, OpenMP's spinning threads slow tiny models ~10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_api_doc_examples_run(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    session: dict = {"__name__": "api_doc"}
    for line, code in python_blocks(DOC.read_text(encoding="utf-8")):
        # the file name and line make a failing example's traceback point into the page
        exec(compile("\n" * (line - 1) + code, str(DOC), "exec"), session)
    out = capsys.readouterr().out
    run = session["run"]
    assert run.iterations == 2 and run.checkpoint.is_file()
    assert "(48, 64) (124, 48, 64)" in out
    video = session["video"]
    assert (tmp_path / "stream_out" / f"{video.stem}_overlay.mp4").is_file()
    assert len(list((tmp_path / "stream_out" / "labels" / video.stem).glob("*.png"))) == 4
    metrics = session["metrics"]
    assert metrics["frames"] == 4 and 0.0 <= metrics["miou"] <= 1.0
