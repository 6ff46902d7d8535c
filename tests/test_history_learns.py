"""The history path carries information end to end: trained where only the previous frame tells
the class, a Video-MCIBI++ model gets it right through its history and not without it.

Each sample is a 2-frame clip of one class: the previous frame shows the class's colour; the
current frame shows it too in half of the samples and is pure noise in the other half (a
"corrupted" frame), with the label always the class. An image model cannot do better than
chance on the noise frames; a model whose history path works learns to read the class from the
previous frame's map (C_bi through the memory, or R).
"""

import pytest
import torch

from vidseg.config import load_config
from vidseg.models.build import build_model

K = 3
SIZE = 32
COLOURS = torch.eye(3) * 2.0 - 0.5  # one normalised colour per class, far apart


def _model(history_source: str):
    overrides = [
        "model.history=1",
        "model.iis_stages=1",
        f"model.num_classes={K}",
        "model.channels=16",
        "model.key_channels=8",
        f"model.history_source={history_source}",
    ]
    cfg = load_config("configs/synthetic/tiny.yaml", overrides)
    torch.manual_seed(0)
    return build_model(cfg)


def _frame(cls: int, g: torch.Generator, noise_only: bool) -> torch.Tensor:
    noise = torch.randn(3, SIZE, SIZE, generator=g)
    if noise_only:
        return noise
    return COLOURS[cls].view(3, 1, 1) + 0.1 * noise


def _batch(g: torch.Generator, size: int = 12):
    classes = torch.randint(0, K, (size,), generator=g)
    corrupted = torch.rand(size, generator=g) < 0.5
    clips = torch.stack(
        [
            torch.stack([_frame(int(c), g, False), _frame(int(c), g, bool(bad))])
            for c, bad in zip(classes, corrupted)
        ]
    )
    labels = classes.view(-1, 1, 1).expand(-1, SIZE, SIZE).clone()
    return clips, labels


def _noise_frame_accuracy(model, with_history: bool) -> float:
    g = torch.Generator().manual_seed(123)
    right = 0
    with torch.no_grad():
        for cls in range(K):
            state = None
            if with_history:
                _, state = model.step(_frame(cls, g, False)[None], state)
            logits, _ = model.step(_frame(cls, g, True)[None], state)
            right += int((logits.argmax(1) == cls).float().mean() > 0.5)
    return right / K


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 32 px frames: a second thread only adds synchronisation
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("history_source", ["cbi", "r"])
def test_history_is_learnt_when_only_the_previous_frame_tells(history_source):
    model = _model(history_source).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for step in range(80):
        model.set_progress(step / 80)
        clips, labels = _batch(g)
        loss = sum(model(clips, labels).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    # every class right on its noise frame through the history, not without it
    assert _noise_frame_accuracy(model, with_history=True) == 1.0
    assert _noise_frame_accuracy(model, with_history=False) <= 2 / K
