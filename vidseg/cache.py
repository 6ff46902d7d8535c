"""Where vidseg keeps downloaded weights, sample videos and converted checkpoints."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The vidseg cache: `$VIDSEG_CACHE`, else `$XDG_CACHE_HOME/vidseg`, else `~/.cache/vidseg`.

    Empty variables count as unset, and a relative `$XDG_CACHE_HOME` is ignored as the XDG spec
    asks, so the cache is never the current directory by accident. Nothing is created here.
    """
    explicit = os.environ.get("VIDSEG_CACHE", "").strip()
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "vidseg"
    return Path.home() / ".cache" / "vidseg"
