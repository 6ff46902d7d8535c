"""The history share of the fusion is computed once per frame and reused by every IIS stage."""

import pytest
import torch

from tests.test_video import _model, _video
from vidseg.models.aggregation import Fusion


def _maps(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 8, 5, 7, generator=g) for _ in range(n)]


def _fusion(kind: str, n: int, folded: bool = False) -> Fusion:
    torch.manual_seed(0)
    fusion = Fusion(kind, 8, n).eval()
    bn = fusion.fuse[1]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    if folded:  # as an inference-time BN folding leaves it: conv with a bias, BN gone
        fusion.fuse[0].bias = torch.nn.Parameter(torch.randn(8))
        fusion.fuse[1] = torch.nn.Identity()
    return fusion


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("kind", ["concat", "add", "weighted"])
def test_reused_history_term_equals_the_plain_fusion(kind, folded):
    fusion = _fusion(kind, 4, folded)
    history = _maps(2, seed=1)
    for seed in (2, 3):  # two IIS stages: new current maps, same history tensors
        current = _maps(2, seed=seed)
        plain = fusion(current + history)
        with fusion.reuse_history(2):
            split = fusion(current + history)
        torch.testing.assert_close(split, plain, atol=1e-5, rtol=1e-5)


def _count_history_terms(monkeypatch) -> dict:
    """Count `Fusion.history_term` calls (in `calls["n"]`) while still computing them."""
    calls = {"n": 0}
    original = Fusion.history_term

    def counting(self, history):
        calls["n"] += 1
        return original(self, history)

    monkeypatch.setattr(Fusion, "history_term", counting)
    return calls


def test_history_term_is_computed_once_per_history(monkeypatch):
    fusion = _fusion("concat", 4)
    calls = _count_history_terms(monkeypatch)
    history = _maps(2, seed=1)
    with fusion.reuse_history(2):
        fusion(_maps(2, seed=2) + history)
        fusion(_maps(2, seed=3) + history)
        assert calls["n"] == 1
        fusion(_maps(2, seed=3) + _maps(2, seed=4))  # other history tensors: recomputed
        assert calls["n"] == 2
    assert fusion._reuse is None
    fusion(_maps(4))  # outside the block: the plain conv
    assert calls["n"] == 2


@pytest.mark.parametrize("iis,expected", [(1, 0), (2, 1), (3, 1)])
def test_step_computes_the_history_share_once_per_frame(monkeypatch, iis, expected):
    model = _model(history=2, iis=iis)
    calls = _count_history_terms(monkeypatch)
    state = None
    frames = _video(4)
    for frame in frames:
        _, state = model.step(frame, state)
    assert calls["n"] == expected * len(frames)


def test_single_stage_stream_is_bitwise_the_plain_fusion():
    """With one IIS stage the fused conv runs on the concatenation exactly as before."""
    model = _model(history=2, iis=1)
    m = model.image_model
    state = None
    for frame in _video(4):
        logits, state = model.step(frame, state)
    frame = _video(5)[4]
    hist = list(state.history[1.0])[::-1]
    with torch.no_grad():
        enc = m.encode(frame, state.c_dl)
        ref, _ = m.predict_frame(enc, m.within_image_context(enc), state.c_dl, hist, 1)
    logits, _ = model.step(frame, state)
    assert torch.equal(logits, ref)
