import pytest
import yaml

from vidseg.config import ConfigError, config_from_dict, config_to_dict, load_config, save_config


def _write(path, tree):
    path.write_text(yaml.safe_dump(tree))
    return path


def test_base_inheritance_merges_in_order(tmp_path):
    (tmp_path / "_base_").mkdir()
    _write(
        tmp_path / "_base_" / "a.yaml",
        {"model": {"channels": 64, "memory": {"momentum": 0.2}}, "train": {"iters": 10}},
    )
    _write(tmp_path / "_base_" / "b.yaml", {"model": {"channels": 32}, "train": {"lr": 0.5}})
    cfg_path = _write(
        tmp_path / "run.yaml",
        {"_base_": ["_base_/a.yaml", "_base_/b.yaml"], "train": {"iters": 20}},
    )
    cfg = load_config(cfg_path)
    assert cfg.model.channels == 32  # b overrides a
    assert cfg.model.memory.momentum == 0.2  # nested keys merge, not replace
    assert cfg.train.iters == 20 and cfg.train.lr == 0.5
    assert cfg.data.clip.history == cfg.model.history == 2


def test_overrides_are_parsed_as_yaml(tmp_path):
    cfg = load_config(
        _write(tmp_path / "c.yaml", {}),
        [
            "model.memory.momentum=0.3",
            "data.clip.history=1",
            "model.history=1",
            "model.hmsa.scales=[0.5, 1.0]",
            "model.backbone.pretrained=weights.pth",
        ],
    )
    assert cfg.model.memory.momentum == 0.3
    assert cfg.model.history == cfg.data.clip.history == 1
    assert cfg.model.hmsa.scales == [0.5, 1.0]
    assert cfg.model.backbone.pretrained == "weights.pth"
    assert load_config(None, ["model.backbone.pretrained=true"]).model.backbone.pretrained is True


def test_unknown_key_names_file_key_and_closest(tmp_path):
    path = _write(tmp_path / "typo.yaml", {"model": {"memroy": {"momentum": 0.1}}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "typo.yaml" in msg and "model.memroy" in msg and "model.memory" in msg


def test_unknown_key_in_override_names_override():
    with pytest.raises(ConfigError, match=r"--set train\.lrr.*train\.lr"):
        load_config(None, ["train.lrr=0.1"])


def test_wrong_type_is_an_error(tmp_path):
    path = _write(tmp_path / "bad.yaml", {"train": {"iters": "many"}})
    with pytest.raises(
        ConfigError, match=r"bad.yaml: train.iters: got 'many', expected an integer"
    ):
        load_config(path)
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(None, ["train.amp=3"])


def test_invalid_choice_and_history_mismatch():
    with pytest.raises(ConfigError, match="upernet"):
        load_config(None, ["model.context=upernett"])
    with pytest.raises(ConfigError, match="data.clip.history=1 differs from model.history=2"):
        load_config(None, ["data.clip.history=1"])


def test_error_names_base_file_that_set_key(tmp_path):
    _write(tmp_path / "base.yaml", {"data": {"batch_sise": 2}})
    path = _write(tmp_path / "child.yaml", {"_base_": "base.yaml"})
    with pytest.raises(
        ConfigError, match=r"base.yaml: unknown key 'data.batch_sise'.*data.batch_size"
    ):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["model.channels=96", "eval.tc_videos=100"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_to_dict(config_from_dict(config_to_dict(cfg))) == config_to_dict(cfg)


def test_repository_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    files = [p for p in root.rglob("*.yaml") if "_base_" not in p.parts]
    for path in files:
        load_config(path)


def test_exponent_floats_without_a_dot_are_numbers():
    """PyYAML reads `1e-4` as a string (YAML 1.1); a float field still takes it, a str field not."""
    cfg = load_config(None, ["train.lr=1e-4", "train.weight_decay=5E-4"])
    assert cfg.train.lr == 1e-4 and cfg.train.weight_decay == 5e-4
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, ["train.lr=1e-4x"])


def test_bottleneck_kernel_is_1_or_3():
    from vidseg.models.build import build_model

    with pytest.raises(ConfigError, match=r"model\.bottleneck_kernel=5 is not one of 1, 3"):
        load_config("stream_light", ["model.bottleneck_kernel=5"])
    cfg = load_config("stream_light", ["model.backbone.output_stride=32"])
    assert cfg.model.bottleneck_kernel == 1
    conv = build_model(cfg).image_model.bottleneck[0]
    assert conv.kernel_size == (1, 1) and (conv.in_channels, conv.out_channels) == (576, 64)
    assert load_config("tiny").model.bottleneck_kernel == 3  # the papers' 3x3 by default
