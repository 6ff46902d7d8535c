"""Fetch the authors' checkpoints into the user cache: resumable, size/hash-checked, atomic.

Layout under `cache_dir()`:
    weights/<file>.pth               the authors' file as published (put it here by hand offline)
    weights/<file>.pth.part          an unfinished download, resumed with an HTTP Range request
    converted/<name>.vidseg.pth      the same weights in vidseg's format (see `fetch_converted`)

Every failure the user can act on (unknown name, no network, HTTP error, cut download, size or
SHA-256 mismatch) raises `ZooError` with a one-line message naming the URL and, for download
failures, the exact path where the file can be put by hand.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from vidseg.cache import cache_dir
from vidseg.errors import VidsegError
from vidseg.zoo.table import ZOO, ZooEntry

try:  # POSIX only: serialises concurrent downloads of one file (e.g. several torchrun ranks)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 30.0
USER_AGENT = "vidseg-zoo (python urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


class ZooError(VidsegError):
    """A model-zoo failure; the message is one line naming the URL or name, and what to do."""


class _Interrupted(Exception):
    """The connection ended before the announced size was received (the .part file is kept)."""

    def __init__(self, have: int, total: int | None, reason: str):
        super().__init__(reason)
        self.have, self.total, self.reason = have, total, reason


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def list_entries(dataset: str | None = None) -> list[ZooEntry]:
    """Every zoo entry, in table order; only those of `dataset` (e.g. "vspw") when given."""
    return [e for e in ZOO if dataset is None or e.dataset == dataset]


def resolve(name: str) -> ZooEntry:
    """The zoo entry called `name` (the authors' config name; their file name is accepted too).

    Raises:
        ZooError: unknown name; the message suggests the closest names.
    """
    key = name.strip().removesuffix(".pth")
    for e in ZOO:
        if key in (e.name, e.filename.removesuffix(".pth")):
            return e
    names = [e.name for e in ZOO]
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "no close match."
    raise ZooError(
        f"unknown model {name!r}: {hint} ({len(names)} models: "
        f"vidseg.zoo.list_entries(), or docs/MODELS.md)"
    )


def weights_path(entry_or_url: ZooEntry | str, dest_dir: str | os.PathLike | None = None) -> Path:
    """Where `fetch` keeps (and where a user may put by hand) the file of an entry, name or URL."""
    url = _target(entry_or_url)[0]
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise ZooError(f"cannot derive a file name from the URL {url}")
    return Path(dest_dir) / name if dest_dir is not None else cache_dir() / "weights" / name


def _target(entry_or_url: ZooEntry | str) -> tuple[str, int | None, str | None]:
    """(url, expected size, expected sha256) of an entry, a zoo name or a bare URL."""
    if isinstance(entry_or_url, ZooEntry):
        entry = entry_or_url
    elif "://" in entry_or_url:
        url = entry_or_url
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ZooError(f"cannot download {url}: only http(s) URLs are supported")
        known = [e for e in ZOO if e.url == url]
        if not known:
            return url, None, None
        entry = known[0]
    else:
        entry = resolve(entry_or_url)
    return entry.url, entry.size_bytes, entry.sha256


def fetch(
    entry_or_url: ZooEntry | str,
    dest_dir: str | os.PathLike | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = 2,
) -> Path:
    """The local path of a published checkpoint, downloading it on first use.

    A file already at `weights_path(...)` is used without touching the network (its size and
    SHA-256 are re-checked when the table records them). Otherwise the file is downloaded to
    `<file>.part`, resumed with an HTTP Range request after a cut (up to `retries` times within
    this call, and again on the next call), checked and renamed into place atomically.

    Args:
        entry_or_url: a `ZooEntry`, a zoo name, or an http(s) URL.
        dest_dir: folder of the final file; default `cache_dir() / "weights"`.
        progress: show a tqdm progress bar on stderr.
        timeout: seconds to wait for the server to connect or send data.
        retries: how many times a cut connection is resumed before giving up.

    Raises:
        ZooError: unknown name, no network, HTTP error, a cut that persists, size or SHA-256
            mismatch. The message is one line naming the URL and the path to put the file at.
    """
    url, size, sha = _target(entry_or_url)
    final = weights_path(url, dest_dir)
    if final.is_file():
        _check(final, url, size, sha, delete=False)
        return final
    part = final.with_name(final.name + ".part")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(
            f"cannot create the cache folder {final.parent} for {url}: {_one_line(exc)}"
        ) from exc
    with _file_lock(final.with_name(f".{final.name}.lock")):
        if final.is_file():  # another process finished it while we waited for the lock
            _check(final, url, size, sha, delete=False)
            return final
        for attempt in range(retries + 1):
            try:
                total = _download(url, part, size, timeout, progress)
                break
            except _Interrupted as cut:
                if attempt == retries:
                    got = f"{cut.have} of {cut.total if cut.total is not None else '?'} bytes"
                    raise ZooError(
                        f"download of {url} was cut after {got} "
                        f"({_one_line(cut.reason)}); {part} is kept and the next "
                        f"call resumes it, or put the file at {final} by hand"
                    ) from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()
                raise ZooError(_network_message(url, exc, final)) from exc
        if total is not None and size is None:
            size = total
        _check(part, url, size, sha, delete=True)
        os.replace(part, final)
    return final


def fetch_converted(
    name: str | ZooEntry,
    convert: Callable[[Path, Path, ZooEntry], None],
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """`<cache>/converted/<name>.vidseg.pth`, created on first use from the authors' file.

    `convert(raw_path, dst_path, entry)` is called only when the converted file does not exist
    yet; it writes to a temporary name in the same folder, renamed into place once it returns.

    Raises:
        ZooError: as `fetch`, or `convert` returned without writing `dst_path`.
        Anything `convert` raises (the temporary file is removed).
    """
    entry = name if isinstance(name, ZooEntry) else resolve(name)
    dst = cache_dir() / "converted" / f"{entry.name}.vidseg.pth"
    if dst.is_file():
        return dst
    raw = fetch(entry, progress=progress, timeout=timeout)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(dst.with_name(f".{dst.name}.lock")):
        if dst.is_file():
            return dst
        tmp = dst.with_name(f"{entry.name}.vidseg.tmp{os.getpid()}.pth")
        try:
            convert(raw, tmp, entry)
            if not tmp.is_file():
                raise ZooError(
                    f"converting {raw} for {entry.name!r}: {convert!r} did not write {tmp}"
                )
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    return dst


def _download(
    url: str, part: Path, expected: int | None, timeout: float, progress: bool
) -> int | None:
    """Append the rest of `url` to `part` (or restart it); the total size, when announced."""
    for _ in range(2):  # the second pass is a restart from zero after a rejected Range
        have = part.stat().st_size if part.is_file() else 0
        if expected is not None and have > expected:
            have = _restart(part)
        if expected is not None and have == expected > 0:
            return expected  # complete before a cut was reported; checked by the caller
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not have:
                raise
            total = _range_total(exc.headers.get("Content-Range"))
            exc.close()
            if total == have:
                return total  # the .part already holds the whole file
            _restart(part)  # larger than the file, or the server will not say: start over
            continue
        with response:
            start, total = 0, _int(response.headers.get("Content-Length"))
            if have and response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != have:  # an answer for another range: do not splice it in
                    response.close()
                    _restart(part)
                    continue
            elif have:  # 200 to a Range request: the server sends the whole file again
                have = 0
            if expected is not None and total is not None and total != expected:
                part.unlink(missing_ok=True)
                raise ZooError(
                    f"size mismatch for {url}: expected {expected} bytes, found {total} "
                    f"(announced by the server; nothing downloaded)"
                )
            _copy(response, part, have, total, progress, url)
            return total
    raise ZooError(f"cannot download {url}: the server rejects every resume of {part}")


def _copy(response, part: Path, have: int, total: int | None, progress: bool, url: str) -> None:
    """Write the body of `response` to `part` from byte `have` on; `_Interrupted` if short."""
    name = url.rsplit("/", 1)[-1]
    with (
        open(part, "ab" if have else "wb") as out,
        tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                out.flush()
                raise _Interrupted(out.tell(), total, f"{type(exc).__name__}: {exc}") from None
            if not chunk:
                break
            out.write(chunk)
            bar.update(len(chunk))
        got = out.tell()
    if total is not None and got < total:
        raise _Interrupted(got, total, "connection closed early")


def _check(path: Path, url: str, size: int | None, sha: str | None, delete: bool) -> None:
    """Compare `path` with the expected size and SHA-256 (when known); `ZooError` on mismatch."""
    what = "deleted" if delete else "delete it to download it again"
    found = path.stat().st_size
    if found == 0 and size is None:  # no checkpoint is empty: a failed copy or download
        size = -1
    if size is not None and found != size:
        if delete:
            path.unlink(missing_ok=True)
        expected = "a non-empty file" if size < 0 else f"{size} bytes"
        raise ZooError(
            f"size mismatch for {url}: expected {expected}, found {found} bytes in {path} ({what})"
        )
    if sha is not None:
        digest = _sha256(path)
        if digest != sha.lower():
            if delete:
                path.unlink(missing_ok=True)
            raise ZooError(
                f"sha256 mismatch for {url}: expected {sha.lower()}, found {digest} "
                f"in {path} ({what})"
            )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def _network_message(url: str, exc: BaseException, final: Path) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = _one_line(exc.reason)
    else:
        reason = f"{type(exc).__name__}: {_one_line(exc)}"
    return (
        f"cannot download {url} ({reason}); if this machine cannot reach it, download the "
        f"file elsewhere and put it at {final}"
    )


def _restart(part: Path) -> int:
    part.unlink(missing_ok=True)
    return 0


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _content_range(value: str | None) -> tuple[int, int | None]:
    """(first byte, total size or None) of a 206 answer's `Content-Range: bytes a-b/t`."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match or match.group(1) is None:
        return -1, None  # unusable: the caller restarts
    return int(match.group(1)), _int(match.group(3))


def _range_total(value: str | None) -> int | None:
    """The total size of a 416 answer's `Content-Range: bytes */t`, when given."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    return _int(match.group(3)) if match else None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the (hidden, empty) file `path`, where the OS supports it.

    The lock file is left in place: removing it would let a waiting process lock a stale inode.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError:  # pragma: no cover - file systems without flock: go on unlocked
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
