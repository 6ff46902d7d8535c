"""Verify a VSPW download: counts per split, unreadable images, missing masks, bad mask values.

A thin wrapper over `vidseg data check ROOT` (same options). Exit code 0 when usable, 1 when not.

    python data_tools/check_vspw.py /data/VSPW_480p --json report.json
"""

from __future__ import annotations

import os
import sys

try:
    import vidseg  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidseg.cli import main as vidseg_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return vidseg_main(["data", "check", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
