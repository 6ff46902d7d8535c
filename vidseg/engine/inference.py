"""Build a model for inference from a config and/or a checkpoint, with clear mismatch errors."""

from __future__ import annotations

import logging
from pathlib import Path

from vidseg.config import Config, config_from_dict, load_config

log = logging.getLogger(__name__)


def load_errors() -> tuple:
    """The expected failures of `load_inference_model` (bad config, checkpoint, zoo download),
    which the commands turn into one-line messages."""
    from vidseg.engine.checkpoint import CheckpointError
    from vidseg.zoo import ZooError

    return (ValueError, FileNotFoundError, KeyError, OSError, CheckpointError, ZooError)


def read_weights(path: str | Path) -> tuple[dict, dict | None]:
    """(model state_dict, stored config dict or None) of a checkpoint file, a run directory (its
    `latest`) or a model-zoo name."""
    from vidseg.engine.checkpoint import find_latest, load_weights_for_inference

    path = resolve_checkpoint(path)
    if path.is_dir():
        latest = find_latest(path)
        if latest is None:
            raise FileNotFoundError(f"{path} is a directory without a 'latest' checkpoint")
        path = latest
    return load_weights_for_inference(path)


def resolve_checkpoint(spec: str | Path) -> Path:
    """A checkpoint path as given, or, for a model-zoo name (no directory part, no file suffix,
    not an existing path), the converted zoo file (downloaded and converted on first use)."""
    path = Path(spec)
    text = str(spec)
    if path.exists() or "/" in text or "\\" in text or path.suffix:
        return path
    from vidseg.segmenter import convert_zoo_entry
    from vidseg.zoo import fetch_converted, resolve

    return fetch_converted(resolve(text), convert_zoo_entry)


def _drop_removed_keys(tree: dict) -> dict:
    """A checkpoint's stored config in today's schema (removed keys rewritten, each logged)."""
    from vidseg.config import migrate_removed_keys

    tree, notes = migrate_removed_keys(tree)
    for note in notes:
        log.warning("checkpoint config: %s", note)
    return tree


def _check_compatible(cfg: Config, ckpt_cfg: Config, path) -> None:
    pairs = [("model.history", cfg.model.history, ckpt_cfg.model.history),
             ("model.num_classes", cfg.model.num_classes, ckpt_cfg.model.num_classes),
             ("model.channels", cfg.model.channels, ckpt_cfg.model.channels),
             ("model.backbone.name", cfg.model.backbone.name, ckpt_cfg.model.backbone.name),
             ("model.context", cfg.model.context, ckpt_cfg.model.context),
             ("model.memory.type", cfg.model.memory.type, ckpt_cfg.model.memory.type)]
    # an image checkpoint (h = 0) starts a video model exactly (`adapt_state`)
    widen = ckpt_cfg.model.history == 0 and cfg.model.history > 0
    bad = [f"{key}: config {a!r}, checkpoint {b!r}" for key, a, b in pairs
           if a != b and not (widen and key == "model.history")]
    if bad:
        raise ValueError(f"checkpoint {path} was trained with a different model than the config: "
                         + "; ".join(bad) + " (use the checkpoint's own config, or a matching one)")


def adapt_state(state: dict, model, source: str) -> dict:
    """Make a checkpoint's state dict fit `model` where that is exact, and say so in the log.

    - The MCIBI++ authors' (sssegmentation) state dicts are converted in memory.
    - An image model's fusion `(Z, 2Z)` loaded into a video model `(Z, (2 + h) Z)` gets zero
      weights for the history inputs, so the video model starts as the image model.
    """
    from vidseg.convert.sssegmentation import expand_history_fusion, is_authors_state, map_state

    if is_authors_state(state):
        log.info("%s: sssegmentation checkpoint, converted in memory", source)
        return map_state(state, model, source)
    own = model.state_dict()
    key = next((k for k in own if k.endswith("fusion.fuse.0.weight")), None)
    if key is not None and key in state and state[key].shape != own[key].shape \
            and state[key].dim() == 4 and state[key].shape[1] < own[key].shape[1]:
        log.info("%s: image-model fusion %s widened to %s for the history inputs (zero weights)",
                 source, tuple(state[key].shape), tuple(own[key].shape))
        state = {**state, key: expand_history_fusion(state[key], own[key].shape, source)}
    return state


def load_inference_model(config: str | Path | Config | None, checkpoint: str | Path | None = None,
                         overrides=(), random_init: bool = False, device: str = "cpu"):
    """Return `(cfg, model)` ready for `step()` (eval mode, on `device`).

    Args:
        config: a config path or object; None = the config stored in the checkpoint.
        checkpoint: a `.pth` checkpoint (or a run directory with a `latest` pointer).
        overrides: `key=value` overrides applied to the config.
        random_init: allow running without a checkpoint (smoke tests); warns loudly.
    """
    from vidseg.engine.checkpoint import load_model_state
    from vidseg.models.build import build_model

    state = ckpt_cfg = None
    if checkpoint is not None:
        state, ckpt_dict = read_weights(checkpoint)
        if ckpt_dict:
            ckpt_cfg = config_from_dict(_drop_removed_keys(ckpt_dict), str(checkpoint))
    elif not random_init:
        raise ValueError("no checkpoint given: pass --checkpoint CKPT, or --random-init for a smoke test")
    if config is None:
        if ckpt_cfg is None:
            raise ValueError(f"checkpoint {checkpoint} stores no config: pass the config file")
        cfg = ckpt_cfg
        if overrides:
            raise ValueError("--set overrides need an explicit config file")
    elif isinstance(config, Config):
        cfg = config
    else:
        cfg = load_config(config, overrides)
    if ckpt_cfg is not None:
        _check_compatible(cfg, ckpt_cfg, checkpoint)
    if state is not None:
        cfg.model.backbone.pretrained = False  # weights come from the checkpoint
    model = build_model(cfg)
    if state is not None:
        load_model_state(model, adapt_state(state, model, str(checkpoint)), str(checkpoint))
    else:
        log.warning("RANDOM WEIGHTS: no checkpoint loaded, predictions are meaningless (smoke test only)")
    return cfg, model.eval().to(device)
