"""`vidseg stream`'s terminal and file chores: progress, the --json summary, --show, --serve."""

from __future__ import annotations

import contextlib
import json
import os
import sys


def progress(source, quiet: bool):
    """A tqdm bar when the length is known (files, folders), else a live FPS line (cameras)."""
    if quiet:
        return None, lambda: None
    if source.num_frames is not None and getattr(source, "device", None) is None:
        from tqdm import tqdm

        bar = tqdm(total=source.num_frames, unit="frame", desc=source.name[-40:], file=sys.stderr)

        def update(done, fps):
            bar.update(1)
            bar.set_postfix_str(f"{fps:.1f} FPS", refresh=False)

        return update, bar.close

    def live(done, fps):
        if done % 5 == 0:
            sys.stderr.write(
                f"\r{source.name}: {done} frames, {fps:5.1f} FPS, {source.dropped} dropped "
            )
            sys.stderr.flush()

    return live, lambda: sys.stderr.write("\n")


def write_json(path: str, summary) -> bool:
    """Write the summary to `path`; if that fails (it may be on the full disk), print it on stderr.

    Returns:
        False when `path` could not be written (one line names it and the OS error).
    """
    text = json.dumps(summary.to_dict(), indent=2) + "\n"
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)  # never a cut JSON file under the asked name
        return True
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        print(
            f"vidseg stream: error: cannot write --json {path}: {exc.strerror or exc}; "
            "the summary follows",
            file=sys.stderr,
        )
        sys.stderr.write(text)
        return False


def remove_empty_folders(top: str) -> None:
    """Remove `top` and the folders under it that hold no file (a refused run made them)."""
    for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):  # not empty: something was written there
            os.rmdir(folder)


def window_or_notice() -> bool:
    """`--show`: True when a window can open here, else one line on stderr saying why not."""
    from vidseg.io.selftest import live_window

    decision = live_window()
    if decision.choice == "available":
        return True
    print(
        f"vidseg stream: --show: no window ({decision.reason}); the other outputs are still "
        "written, and --serve PORT shows the live view in a browser",
        file=sys.stderr,
    )
    return False


def open_live_view(address: str, source: str):
    """`--serve`: bind (so a port in use fails before any work) and start the page server."""
    from vidseg.cli import CliError
    from vidseg.io.serve import LiveServer, ServeError, parse_address, source_title

    try:
        live = LiveServer(*parse_address(address), title=source_title(source))
    except ServeError as exc:
        raise CliError(f"--serve {exc}") from None
    print(f"live view: {live.url} (its Stop button ends the run like Ctrl-C)", file=sys.stderr)
    if not live.local_only:
        print(
            f"WARNING: --serve {address}: the page is reachable from other machines and has no "
            "password; anyone who opens it can stop the run",
            file=sys.stderr,
        )
    return live
