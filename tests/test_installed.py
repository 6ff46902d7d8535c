"""vidseg as a user gets it: a wheel installed into a fresh venv, run outside the checkout.

The fresh venv reuses this environment's third-party packages through a `.pth` line (torch is
not installed twice), but `vidseg` itself comes from the wheel: the checkout is never on
`sys.path` (the commands run from a temporary directory without PYTHONPATH). An editable install
of a copy of the tree checks the other half of the mechanism: it reads that tree's `configs/`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "README.md", "vidseg", "configs")


def _copy_tree(dst: Path) -> Path:
    """The files a source distribution holds, copied: builds never write into the checkout."""
    dst.mkdir(parents=True)
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def _pip(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _no_isolation() -> list[str]:
    """Build with this environment's setuptools when it is recent enough (fast, offline)."""
    try:
        import setuptools
    except ImportError:
        return []
    return ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 68 else []


def _fresh_venv(path: Path) -> Path:
    """A venv without pip whose site-packages also sees this environment's packages."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "_vidseg_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _install(python: Path, *target: str) -> None:
    # --ignore-installed: this environment's own vidseg (visible through the .pth) is left alone
    _pip(
        "--python",
        str(python),
        "install",
        "--quiet",
        "--no-deps",
        "--ignore-installed",
        *_no_isolation(),
        *target,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    src = _copy_tree(base / "src")
    _pip("wheel", "--quiet", "--no-deps", *_no_isolation(), "-w", str(base / "dist"), str(src))
    (path,) = (base / "dist").glob("vidseg-*.whl")
    return path


def test_wheel_carries_every_config_inside_the_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    prefix = "vidseg/_configs/"
    packaged = sorted(n[len(prefix) :] for n in names if n.startswith(prefix))
    configs = REPO / "configs"
    assert packaged == sorted(p.relative_to(configs).as_posix() for p in configs.rglob("*.yaml"))
    # nothing outside the package: no top-level configs/ in site-packages
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "vidseg"
    }


def _env(tmp: Path, venv_python: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XDG_CACHE_HOME")}
    env.update(
        HOME=str(tmp / "home"),
        VIDSEG_CACHE=str(tmp / "cache"),
        HF_HUB_OFFLINE="1",
        PATH=str(venv_python.parent) + os.pathsep + env.get("PATH", ""),
    )
    return env


def _run(cwd: Path, env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_installed_wheel_runs_from_anywhere(wheel, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    _install(python, str(wheel))
    for name in ("home", "cache", "work"):
        (tmp_path / name).mkdir()
    work, env = tmp_path / "work", _env(tmp_path, python)
    vidseg = str(python.parent / "vidseg")

    where = _run(
        work,
        env,
        str(python),
        "-c",
        "import json, os, sys, vidseg, vidseg.packaged_configs as p; "
        "print(json.dumps([vidseg.__file__, str(p.configs_root()), "
        "[os.path.abspath(e) for e in sys.path]]))",
    ).stdout
    package, configs, path = json.loads(where)
    venv = str(tmp_path / "venv")
    assert package.startswith(venv) and configs.startswith(venv), where
    assert str(REPO) not in path

    assert "torch" in _run(work, env, vidseg, "info").stdout
    listing = json.loads(_run(work, env, vidseg, "configs", "--json").stdout)
    assert {"synthetic/tiny", "synthetic/stream_light", "vspw/upernet_mcibipp_r50"} <= {
        r["name"] for r in listing
    }
    assert all(r["path"].startswith(venv) for r in listing)

    _run(
        work,
        env,
        vidseg,
        "data",
        "synth",
        "--out",
        "d",
        "--train-videos",
        "2",
        "--val-videos",
        "1",
        "--test-videos",
        "0",
        "--frames",
        "6",
        "--height",
        "48",
        "--width",
        "64",
    )
    _run(
        work,
        env,
        vidseg,
        "train",
        "tiny",
        "--set",
        "data.root=d",
        "train.iters=2",
        "train.validate=false",
        "--work-dir",
        "run",
    )
    assert (work / "run" / "iter_0000002.pth").is_file()
    (video,) = (work / "d" / "videos").glob("*.mp4")
    _run(
        work,
        env,
        vidseg,
        "stream",
        "synthetic/stream_light",
        f"d/videos/{video.name}",
        "--random-init",
        "--out",
        "o",
        "--quiet",
    )
    assert list((work / "o").glob("*.mp4"))

    # a user's YAML that inherits a packaged config; eval and score on the trained run
    (work / "mine.yaml").write_text("_base_: synthetic/tiny\ndata: {root: d}\n")
    _run(work, env, vidseg, "eval", "mine.yaml", "--checkpoint", "run", "--out", "e", "--no-tc")
    _run(
        work,
        env,
        vidseg,
        "score",
        "--data",
        "d",
        "--pred",
        "e/pred",
        "--no-tc",
        "--out",
        "e/score.json",
    )
    assert 0.0 <= json.loads((work / "e" / "score.json").read_text())["miou"] <= 1.0

    bad = _run(work, env, vidseg, "train", "nosuchconfig", ok=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "closest: " in bad.stderr
    (work / "bad.yaml").write_text("_base_: vspw/upernet_mcibipp_r5O\n")
    bad = _run(work, env, vidseg, "train", "bad.yaml", ok=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert f"{work / 'bad.yaml'}: _base_ 'vspw/upernet_mcibipp_r5O'" in bad.stderr
    assert "closest: vspw/upernet_mcibipp_r50" in bad.stderr

    # only the named outputs in the working directory; nothing in HOME (the cache is VIDSEG_CACHE)
    assert sorted(p.name for p in work.iterdir()) == ["bad.yaml", "d", "e", "mine.yaml", "o", "run"]
    assert list((tmp_path / "home").iterdir()) == []


def test_editable_install_reads_the_tree_configs(tmp_path):
    src = _copy_tree(tmp_path / "src")
    python = _fresh_venv(tmp_path / "venv")
    _install(python, "--editable", str(src))
    (src / "configs" / "synthetic" / "added_later.yaml").write_text("# Added after install.\n")
    (tmp_path / "work").mkdir()
    out = _run(
        tmp_path / "work",
        _env(tmp_path, python),
        str(python),
        "-c",
        "import vidseg, vidseg.packaged_configs as p; print(vidseg.__file__); "
        "print(p.configs_root()); print(p.resolve_config('added_later'))",
    ).stdout.splitlines()
    assert out == [
        str(src / "vidseg" / "__init__.py"),
        str(src / "configs"),
        str(src / "configs" / "synthetic" / "added_later.yaml"),
    ]
