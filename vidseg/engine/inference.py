"""Build a model for inference from a config and/or a checkpoint, with clear mismatch errors.

Every expected failure here is a `VidsegError` (`DeviceError`, `ConfigError`, `CheckpointError`,
`ZooError`), so the commands need no wrapping: `vidseg.cli.main` prints it as one line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vidseg.config import Config, ConfigError, config_from_dict, load_config
from vidseg.errors import DeviceError, VidsegError

log = logging.getLogger(__name__)
RANDOM_INIT_SEED = 0  # random_init: every process builds the same random weights

DEVICE_NAMES = "cpu, cuda, cuda:N or mps"


def check_device(spec: str | None):
    """The `torch.device` for `spec` ("cpu", "cuda", "cuda:1", "mps"; None = "cpu"), if usable here.

    Called by every command taking `--device` before anything is loaded or built.

    Raises:
        DeviceError: not a device name, an unsupported kind, or CUDA / MPS / a GPU index that
            this machine does not have (the message says why and what to use).
    """
    import torch

    text = "cpu" if spec is None else str(spec)
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(
            f"device {text!r} is not a device name; expected {DEVICE_NAMES}"
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch build has no CUDA support"
                if torch.version.cuda is None
                else "no NVIDIA GPU or driver was found"
            )
            raise DeviceError(f"device {text!r}: CUDA is not available ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"device {text!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {text!r}: Apple MPS is not available here; use --device cpu")
        return device
    raise DeviceError(
        f"device {text!r}: {device.type} devices are not supported; expected {DEVICE_NAMES}"
    )


def build_checked(cfg: Config, source: str):
    """`build_model(cfg)`, with a config the model cannot be built from as a `ConfigError`.

    Args:
        cfg: the resolved config.
        source: the config's name for the message ("configs/x.yaml", "the config", ...).
    Raises:
        ConfigError: e.g. an unknown backbone or a missing local weight file (one line).
    """
    from vidseg.models.build import build_model

    try:
        return build_model(cfg)
    except VidsegError:
        raise
    except (ValueError, KeyError, FileNotFoundError) as exc:
        text = str(exc).strip("'\"")
        raise ConfigError(
            f"cannot build the model from {source}: "
            f"{text.splitlines()[0] if text else type(exc).__name__}"
        ) from exc


def read_weights(path: str | Path) -> tuple[dict, dict | None]:
    """(model state_dict, stored config dict or None) of a checkpoint file, a run directory (its
    `latest`) or a model-zoo name."""
    from vidseg.engine.checkpoint import CheckpointError, find_latest, load_weights_for_inference

    path = resolve_checkpoint(path)
    if path.is_dir():
        latest = find_latest(path)
        if latest is None:
            raise CheckpointError(
                f"{path} is a folder without a checkpoint ('latest' or iter_*.pth)"
            )
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
    pairs = [
        ("model.history", cfg.model.history, ckpt_cfg.model.history),
        ("model.num_classes", cfg.model.num_classes, ckpt_cfg.model.num_classes),
        ("model.channels", cfg.model.channels, ckpt_cfg.model.channels),
        ("model.backbone.name", cfg.model.backbone.name, ckpt_cfg.model.backbone.name),
        ("model.context", cfg.model.context, ckpt_cfg.model.context),
        ("model.memory.type", cfg.model.memory.type, ckpt_cfg.model.memory.type),
    ]
    # an image checkpoint (h = 0) starts a video model exactly (`adapt_state`)
    widen = ckpt_cfg.model.history == 0 and cfg.model.history > 0
    bad = [
        f"{key}: config {a!r}, checkpoint {b!r}"
        for key, a, b in pairs
        if a != b and not (widen and key == "model.history")
    ]
    if bad:
        raise ConfigError(
            f"checkpoint {path} was trained with a different model than the config: "
            + "; ".join(bad)
            + " (use the checkpoint's own config, or a matching one)"
        )


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
    if (
        key is not None
        and key in state
        and state[key].shape != own[key].shape
        and state[key].dim() == 4
        and state[key].shape[1] < own[key].shape[1]
    ):
        log.info(
            "%s: image-model fusion %s widened to %s for the history inputs (zero weights)",
            source,
            tuple(state[key].shape),
            tuple(own[key].shape),
        )
        state = {**state, key: expand_history_fusion(state[key], own[key].shape, source)}
    return state


def _has_meta_tensors(model) -> bool:
    import torch

    return any(t.is_meta for t in (*model.parameters(), *model.buffers())) or any(
        isinstance(v, torch.Tensor) and v.is_meta for m in model.modules() for v in vars(m).values()
    )


def _model_with_weights(cfg: Config, source: str, state: dict, checkpoint: str):
    """The model built for `cfg`, holding the checkpoint's tensors.

    Built on the meta device and given the checkpoint's tensors (`assign`), so no random
    weights are made and nothing is copied: the peak memory of loading is about one model, not
    two. A model whose construction needs real tensors (some timm backbones compute values in
    their constructor) or keeps ones that are not in the state dict (Swin's index tables; the
    memory's noise and counts, which an unconverted authors' file lacks) is built normally and
    the weights copied in.
    """
    import torch

    from vidseg.engine.checkpoint import load_model_state

    try:
        with torch.device("meta"):
            model = build_checked(cfg, source)
    except Exception:  # noqa: BLE001 - any failure on meta means: build it the ordinary way
        model = None
    if model is not None:
        load_model_state(model, adapt_state(state, model, checkpoint), checkpoint, assign=True)
        if not _has_meta_tensors(model):
            return model
    model = build_checked(cfg, source)
    load_model_state(model, adapt_state(state, model, checkpoint), checkpoint)
    return model


def load_inference_model(
    config: str | Path | Config | None,
    checkpoint: str | Path | None = None,
    overrides=(),
    random_init: bool = False,
    device: str = "cpu",
    optimize: bool = False,
):
    """Return `(cfg, model)` ready for `step()` (eval mode, on `device`).

    Args:
        config: a config path or object; None = the config stored in the checkpoint.
        checkpoint: a `.pth` checkpoint (or a run directory with a `latest` pointer).
        overrides: `key=value` overrides applied to the config.
        random_init: allow running without a checkpoint (smoke tests); warns loudly. The random
            weights are seeded (`RANDOM_INIT_SEED`), the same in every process.
        device: where the model goes (`check_device` is applied first).
        optimize: rewrite the model for inference only (`vidseg.models.fuse`: BatchNorms folded
            into the convolutions, channels-last weights on a CPU); same outputs up to float
            rounding, but its state dict no longer has the BatchNorm entries and it cannot be
            trained.
    Raises:
        DeviceError, ConfigError, CheckpointError, ZooError: one-line messages (`VidsegError`).
    """
    device = check_device(device)
    if checkpoint is None and not random_init:
        raise ConfigError(
            "no checkpoint given: pass --checkpoint CKPT, or --random-init for a smoke test"
        )
    if config is None and overrides:
        raise ConfigError("--set overrides need an explicit config file")
    # a bad config fails in a second, before a (possibly large) checkpoint is read
    cfg = config if isinstance(config, Config) or config is None else load_config(config, overrides)
    state = ckpt_cfg = None
    if checkpoint is not None:
        state, ckpt_dict = read_weights(checkpoint)
        if ckpt_dict:
            ckpt_cfg = config_from_dict(_drop_removed_keys(ckpt_dict), str(checkpoint))
    if cfg is None:
        if ckpt_cfg is None:
            raise ConfigError(f"checkpoint {checkpoint} stores no config: pass the config file")
        cfg = ckpt_cfg
    if ckpt_cfg is not None:
        _check_compatible(cfg, ckpt_cfg, checkpoint)
    if state is not None:
        cfg.model.backbone.pretrained = False  # weights come from the checkpoint
    source = (
        f"the config in {checkpoint}"
        if config is None
        else (str(config) if isinstance(config, (str, Path)) else "the config")
    )
    if state is not None:
        model = _model_with_weights(cfg, source, state, str(checkpoint))
        del state  # the model holds the tensors it needs; BatchNorm folding below frees them
    else:
        # the same random weights in every process and run (stream vs eval vs export, reruns),
        # without touching the caller's random state
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = build_checked(cfg, source)
        log.warning(
            "RANDOM WEIGHTS: no checkpoint loaded, predictions are meaningless (smoke test only)"
        )
    model = model.eval().to(device)
    if optimize:
        from vidseg.models.fuse import optimize_for_inference

        optimize_for_inference(model)
    return cfg, model
