"""Config names: packaged configs by name, `_base_` on a packaged config, `vidseg configs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vidseg import packaged_configs as pc
from vidseg.cli import main
from vidseg.config import ConfigError, config_to_dict, load_config

REPO = Path(__file__).resolve().parent.parent
R50 = REPO / "configs" / "vspw" / "upernet_mcibipp_r50.yaml"


def _write(path: Path, tree: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_checkout_reads_the_repository_configs():
    # the tests run from the checkout (editable install or PYTHONPATH): no copy is involved
    assert pc.configs_root() == REPO / "configs"
    names = pc.packaged_configs()
    assert names["vspw/upernet_mcibipp_r50"] == R50
    assert "_base_/mcibipp" in names
    assert "_base_/mcibipp" not in pc.packaged_configs(include_bases=False)
    assert len(names) == len(list((REPO / "configs").rglob("*.yaml")))


@pytest.mark.parametrize(
    "spec",
    [
        "vspw/upernet_mcibipp_r50",
        "vspw/upernet_mcibipp_r50.yaml",
        "upernet_mcibipp_r50",
        "upernet_mcibipp_r50.yaml",
        "configs/vspw/upernet_mcibipp_r50.yaml",
    ],
)
def test_names_resolve_from_any_directory(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pc.resolve_config(spec) == R50


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch):
    own = _write(tmp_path / "vspw" / "upernet_mcibipp_r50.yaml", {"train": {"iters": 5}})
    monkeypatch.chdir(tmp_path)
    relative = "vspw/upernet_mcibipp_r50.yaml"
    assert pc.resolve_config(relative) == Path(relative)
    assert pc.resolve_config(str(own)) == own
    assert pc.resolve_config("vspw/upernet_mcibipp_r50") == R50  # no such file: the name


def test_unknown_name_is_one_line_with_the_closest_names():
    with pytest.raises(ConfigError) as info:
        load_config("upernet_mcibipp_r5O")
    message = str(info.value)
    assert "\n" not in message
    assert "'upernet_mcibipp_r5O'" in message
    assert "closest: vspw/upernet_mcibipp_r50" in message
    assert "vidseg configs" in message


def test_ambiguous_file_name_lists_both(tmp_path, monkeypatch):
    _write(tmp_path / "a" / "x.yaml", {})
    _write(tmp_path / "b" / "x.yaml", {})
    monkeypatch.setattr(pc, "configs_root", lambda: tmp_path)
    assert pc.resolve_config("a/x") == tmp_path / "a" / "x.yaml"
    with pytest.raises(ConfigError, match="ambiguous: a/x, b/x"):
        pc.resolve_config("x")


def test_user_yaml_inherits_a_packaged_config(tmp_path):
    own = _write(
        tmp_path / "mine.yaml", {"_base_": "vspw/upernet_mcibipp_r50", "train": {"iters": 7}}
    )
    cfg = load_config(own)
    expected = load_config("vspw/upernet_mcibipp_r50", ["train.iters=7"])
    assert config_to_dict(cfg) == config_to_dict(expected)
    # a list mixing a packaged name and a file next to it, the file applied last
    _write(tmp_path / "local.yaml", {"model": {"history": 1}})
    both = _write(tmp_path / "both.yaml", {"_base_": ["synthetic/tiny", "local.yaml"]})
    assert load_config(both).model.history == 1
    assert load_config(both).model.channels == load_config("synthetic/tiny").model.channels


def test_user_yaml_with_an_unknown_base_names_the_file(tmp_path):
    own = _write(tmp_path / "mine.yaml", {"_base_": "vspw/upernet_mcibipp_r5O"})
    with pytest.raises(ConfigError) as info:
        load_config(own)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{own}: _base_ 'vspw/upernet_mcibipp_r5O'")
    assert "closest: vspw/upernet_mcibipp_r50" in message


def test_relative_base_still_relative_to_the_file(tmp_path, monkeypatch):
    _write(tmp_path / "cfg" / "base.yaml", {"model": {"channels": 48}})
    child = _write(tmp_path / "cfg" / "sub" / "child.yaml", {"_base_": "../base.yaml"})
    monkeypatch.chdir(tmp_path)
    assert load_config("cfg/sub/child.yaml").model.channels == 48
    assert load_config(child).model.channels == 48


def test_every_packaged_config_has_a_description():
    for name, path in pc.packaged_configs().items():
        text = pc.describe(path)
        assert text and "\n" not in text, name
    assert pc.describe(REPO / "configs" / "synthetic" / "tiny.yaml") == (
        "Smallest useful model, for tests: ResNet-18 OS8, Z = 32, 64 px crops, a few iterations."
    )


def test_describe_takes_the_first_sentence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "# A model (seed-spec 3.2, 3.5): Z = 512,\n# h = 2. Second sentence.\n"
        "model: {}\n# not the description\n"
    )
    assert pc.describe(path) == "A model (seed-spec 3.2, 3.5): Z = 512, h = 2."
    path.write_text("model: {}\n")
    assert pc.describe(path) == ""


def test_configs_command_lists_and_filters(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "vspw/upernet_video_mcibipp_r50" in out and "synthetic/tiny" in out
    assert "_base_/" not in out.split("config(s) in")[0]
    assert main(["configs", "SYNTHETIC", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names == ["synthetic/demo", "synthetic/stream_light", "synthetic/tiny"]
    assert all(r["description"] and Path(r["path"]).is_file() for r in rows)
    assert main(["configs", "_base_", "--all"]) == 0
    assert "_base_/mcibipp " in capsys.readouterr().out
    assert main(["configs", "nothing-like-this"]) == 1
    assert "no packaged config name contains" in capsys.readouterr().err


def test_train_unknown_config_is_one_line(capsys):
    assert main(["train", "nosuchconfig"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("vidseg train: error: config 'nosuchconfig' is neither a file nor")
    assert "closest: " in err


def test_segmenter_resolves_through_the_same_function(tmp_path, monkeypatch):
    from vidseg.segmenter import resolve_config_path

    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("tiny") == REPO / "configs" / "synthetic" / "tiny.yaml"
    with pytest.raises(ConfigError, match="closest: synthetic/tiny"):
        resolve_config_path("synthetic/tiyn")


def test_every_zoo_entry_names_a_packaged_config():
    from vidseg.zoo import ZOO

    entries = ZOO.values() if isinstance(ZOO, dict) else ZOO
    for entry in entries:
        assert entry.config in pc.packaged_configs(), entry.name
