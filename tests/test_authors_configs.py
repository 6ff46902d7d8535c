"""The packaged `model.head.style: sssegmentation` configs build the MCIBI++ authors' architectures.

Reference: `tests/fixtures/ssseg_architectures.json.gz`, written by
`tests/fixtures/make_ssseg_arch_fixture.py` from sssegmentation 1.7.0's own builder: for each of the
authors' MCIBI++ configs (ResNet-50/101, Swin-Large) the parameter count and every state-dict key
with its shape. For each YAML this test checks that

- `build_model` has the authors' number of parameters, once their memory is counted (a `(K, 2)`
  parameter of theirs, a buffer of ours) and, for a video model, the history inputs of the fusion
  conv (`h` extra `Z x Z x k x k` blocks) are taken off;
- `map_state` turns a synthetic authors' state dict with exactly their keys and shapes into a
  complete state dict of the model, with every shape right.

Models are built on the meta device (no memory, no initialisation), so the whole file runs in
seconds. The authors' configs that our schema cannot express are listed in `UNSUPPORTED`.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
from pathlib import Path

import pytest
import torch

from vidseg.config import load_config
from vidseg.convert.sssegmentation import map_state
from vidseg.models.build import build_model

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ssseg_architectures.json.gz"
DATASETS = ("ade20k", "cityscapes", "cocostuff10k", "lip", "pascalcontext59", "voc")

# VSPW configs keep their short names; the video ones are the image ones plus model.history: 2
VSPW = {
    "vspw/upernet_mcibipp_r50": "mcibiplusplus_upernet_resnet50os8_vspw",
    "vspw/upernet_mcibipp_r101": "mcibiplusplus_upernet_resnet101os8_vspw",
    "vspw/upernet_mcibipp_swinl": "mcibiplusplus_upernet_swinlarge_vspw",
    "vspw/upernet_video_mcibipp_r50": "mcibiplusplus_upernet_resnet50os8_vspw",
    "vspw/upernet_video_mcibipp_r101": "mcibiplusplus_upernet_resnet101os8_vspw",
    "vspw/upernet_video_mcibipp_swinl": "mcibiplusplus_upernet_swinlarge_vspw",
}

# the authors' configs without a vidseg YAML, and why (none today; the last two, Cityscapes PPM
# with a 3x3 H_pr and UperNet with 1024-wide pyramid convs, became head.pr_kernel and
# head.fpn_out_channels)
UNSUPPORTED: dict[str, str] = {}


def _cases() -> list[tuple[str, str]]:
    """(config name relative to configs/, the authors' config name) for every YAML checked here."""
    cases = []
    for dataset in DATASETS:
        for path in sorted((CONFIGS / dataset).glob("mcibiplusplus_*.yaml")):
            cases.append((f"{dataset}/{path.stem}", path.stem))
    return cases + sorted(VSPW.items())


CASES = _cases()


@functools.cache
def _fixture() -> dict:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        return json.load(f)["configs"]


@contextlib.contextmanager
def _linspace_on_cpu():
    """The Swin computes its drop-path rates with `torch.linspace(...).tolist()`, which needs real
    values; under `torch.device('meta')` every factory call would give a meta tensor."""
    original = torch.linspace

    def linspace(*args, **kwargs):
        kwargs.setdefault("device", "cpu")
        return original(*args, **kwargs)

    torch.linspace = linspace
    try:
        yield
    finally:
        torch.linspace = original


@functools.cache
def _built(rel: str):
    """(config, model built on the meta device) for configs/<rel>.yaml."""
    cfg = load_config(CONFIGS / f"{rel}.yaml", ["model.backbone.pretrained=false"])
    with _linspace_on_cpu(), torch.device("meta"):
        model = build_model(cfg)
    return cfg, model


def _relative_position_index(window: int) -> torch.Tensor:
    """The standard Swin window index, as in the authors' checkpoints (built independently here)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + window - 1  # (2, N, N)
    return rel[0] * (2 * window - 1) + rel[1]


def _synthetic_authors_state(entry: dict) -> dict:
    """The authors' keys and shapes; values only where `map_state` reads them (index buffers)."""
    state = {}
    for key, shape in entry["state"]:
        if key.endswith("relative_position_index"):
            state[key] = _relative_position_index(round(shape[0] ** 0.5))
        else:
            state[key] = torch.empty(shape, device="meta")
    return state


def test_every_authors_config_has_a_yaml_or_a_reason():
    names = set(_fixture())
    covered = {name for _, name in CASES}
    assert covered <= names, (
        f"YAMLs for configs the fixture does not know: {sorted(covered - names)}"
    )
    assert set(UNSUPPORTED) <= names
    assert not covered & set(UNSUPPORTED)
    assert names == covered | set(UNSUPPORTED), sorted(names - covered - set(UNSUPPORTED))
    for rel, _ in CASES:
        assert (CONFIGS / f"{rel}.yaml").is_file(), rel


def test_zoo_entries_name_the_yaml_that_builds_them():
    from vidseg.zoo.table import ZOO

    by_yaml = dict(CASES)
    for entry in ZOO:
        if not entry.name.startswith("mcibiplusplus_") or entry.name in UNSUPPORTED:
            continue
        assert by_yaml.get(entry.config) == entry.name, (entry.name, entry.config)
        assert "video" not in entry.config  # the authors' checkpoints are image models


@pytest.mark.parametrize("rel, name", CASES, ids=[rel for rel, _ in CASES])
def test_parameter_count_matches_the_authors(rel, name):
    entry = _fixture()[name]
    cfg, model = _built(rel)
    k, history = cfg.model.num_classes, cfg.model.history
    assert k == entry["num_classes"]
    ours = sum(p.numel() for p in model.parameters())
    # the history inputs of the fusion conv: h more Z-wide input blocks than their (Z, 2Z, 3, 3)
    shapes = {key: shape for key, shape in entry["state"]}
    fusion = shapes["memory_module.bottleneck.0.weight"]
    extra = history * fusion[0] * (fusion[1] // 2) * fusion[2] * fusion[3]
    assert ours + 2 * k - extra == entry["num_params"], (
        f"{rel}: {ours} parameters + 2 K ({2 * k}) - history fusion ({extra}) != the authors' "
        f"{entry['num_params']} for {name}"
    )


@pytest.mark.parametrize("rel, name", CASES, ids=[rel for rel, _ in CASES])
def test_map_state_fills_the_model_from_the_authors_keys(rel, name):
    _, model = _built(rel)
    own = model.state_dict()
    out = map_state(_synthetic_authors_state(_fixture()[name]), model, source=name)
    assert set(out) == set(own)
    wrong = [
        (k, tuple(out[k].shape), tuple(own[k].shape)) for k in own if out[k].shape != own[k].shape
    ]
    assert not wrong, wrong[:5]
