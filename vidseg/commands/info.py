"""`vidseg info`: versions, and which optional dependencies work here (each decision with why)."""

from __future__ import annotations

import argparse
import importlib
import platform


def _version(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an optional reader may fail to import for many reasons
        return f"unavailable ({type(exc).__name__}: {exc})"
    return str(getattr(module, "__version__", "installed"))


def collect_info(checks: bool = True) -> dict:
    """Return a dict describing the environment (used by `vidseg info` and run directories).

    Args:
        checks: also run the self-tests (`vidseg.io.selftest.report`): `info["checks"]` maps
            video_reader / live_window / device to `{"choice", "reason", "summary"}`.
    """
    import torch

    info = {
        "vidseg": _version("vidseg"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "numpy": _version("numpy"),
        "opencv": _version("cv2"),
        "video_readers": {
            "pyav": _version("av"),
            "decord": _version("decord"),
            "opencv": _version("cv2"),
        },
        "device": "cuda" if torch.cuda.is_available() else "cpu",  # replaced by the checked one
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import av

        info["h264_encoder"] = "libx264" in av.codecs_available
    except Exception:
        info["h264_encoder"] = False
    if checks:
        from vidseg.io.selftest import report

        decisions = report()
        info["device"] = decisions["device"].choice
        info["checks"] = {name: d.as_dict() for name, d in decisions.items()}
    return info


def _print(info: dict, indent: int = 0) -> None:
    for key, value in info.items():
        if key == "checks" and indent == 0:
            print("checks:")
            for name, decision in value.items():
                print(f"  {name.replace('_', ' ')}: {decision['summary']}")
        elif isinstance(value, dict):
            print(" " * indent + f"{key}:")
            _print(value, indent + 2)
        else:
            print(" " * indent + f"{key}: {value}")


def run(args: argparse.Namespace) -> int:
    info = collect_info()
    if args.json:
        import json

        print(json.dumps(info, indent=2))
    else:
        _print(info)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "info",
        help="show versions, and which video reader, live window and device are used here and why",
        description="Show library versions, then the decisions taken on this "
        "machine after self-tests: the video reader for random access "
        "(decord only if its self-test passes, else PyAV with seeking; "
        "VIDSEG_VIDEO_READER=pyav|decord|auto overrides), whether the "
        "OpenCV live window can open, and the compute device (CUDA only "
        "if a test convolution runs).",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)
