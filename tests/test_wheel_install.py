"""The package as a user installs it: a wheel built with ``pip wheel``, installed into a
fresh virtual environment and run from a folder outside the checkout. Every packaged
config is in it, the commands take a config by name, the scene generator (the demo's
first stage) writes under the current folder, and a config by name trains.

To stay cheap, the wheel holds the CPU kernels only (``CONDNET_CPU_ONLY=1``), built from
a copy of the sources in pytest's cache folder, whose ninja build folder a later run
reuses (a cold build takes about a minute and a half on two cores, a warm one seconds);
and the fresh environment sees torch and the other dependencies of this test run's
environment through a ``.pth`` line naming its site-packages. A ``.pth`` path line does
not run that folder's own ``.pth`` files, so the editable install of the checkout stays
invisible: ``condnet`` must come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# What `pip wheel` reads: the build files, the package, the kernels' sources.
SOURCES = ("setup.py", "pyproject.toml", "README.md", "LICENSE", "condnet", "csrc")
DEMO = "condnet_r18-d8_scenes"


def _copy_sources(dest: Path) -> None:
    """The sources into ``dest``, replacing an earlier copy but keeping ``dest/build``
    (ninja's objects). Modification times are kept, so ninja rebuilds only what
    changed since the last run."""
    for name in SOURCES:
        src, out = REPO / name, dest / name
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        if src.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
            shutil.copytree(src, out, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, out)
    # The wheel is built from what is there now: setuptools' staging folders of an
    # earlier run could hold files removed since.
    for stale in (dest / "build").glob("lib.*"):
        shutil.rmtree(stale)
    for stale in (dest / "build").glob("bdist.*"):
        shutil.rmtree(stale)


def _run(argv, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(request) -> Path:
    """A CPU-only wheel of the checkout as it is now."""
    build_root = Path(request.config.cache.mkdir("condnet-wheel-build"))
    source = build_root / "src"
    source.mkdir(exist_ok=True)
    _copy_sources(source)
    out = build_root / "dist"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "CONDNET_CPU_ONLY": "1"}
    env.pop("FORCE_CUDA", None)
    _ok(
        _run(
            [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps"]
            + ["--no-index", "-w", out, "."],
            source,
            env,
        )
    )
    (found,) = out.glob("condnet-*.whl")
    return found


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> tuple[Path, dict]:
    """(bin folder, environment variables) of a new venv with the wheel installed."""
    root = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_ok(_run([python, "-c", where], root, {})).strip())
    # This run's site-packages, for torch & co.; appended after the venv's own.
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "condnet_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    _ok(
        _run(
            [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps"]
            + ["--no-index", wheel],
            root,
            env,
        )
    )
    return root, env


def test_wheel_runs_by_config_name_outside_the_checkout(fresh_env, tmp_path):
    root, env = fresh_env
    bin_dir = root / "bin"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    # condnet and its compiled kernels come from the wheel, not from the checkout.
    probe = (
        "import json, condnet, condnet.ops; "
        "print(json.dumps([condnet.__file__, condnet.ops.build_info()['extension']]))"
    )
    module, extension = json.loads(_ok(_run([bin_dir / "python", "-c", probe], cwd, env)))
    assert Path(module).resolve().is_relative_to(root.resolve()) and extension

    # Every config file of the checkout is in the wheel; condnet-configs lists them there.
    installed = Path(module).parent / "configs"
    source = REPO / "condnet" / "configs"
    assert sorted(p.relative_to(installed) for p in installed.rglob("*.py")) == sorted(
        p.relative_to(source) for p in source.rglob("*.py")
    )
    listing = _ok(_run([bin_dir / "condnet-configs"], cwd, env))
    rows = dict(line.split() for line in listing.splitlines())
    assert DEMO in rows and all(Path(p).resolve().is_relative_to(installed) for p in rows.values())

    # A config by name: --help, an error with close matches, the demo's first stage
    # (the scenes, written under the current folder) and a training run on them.
    assert _ok(_run([bin_dir / "condnet-train", DEMO, "--help"], cwd, env)).startswith(
        "usage: condnet-train "
    )
    typo = _run([bin_dir / "condnet-train", DEMO[:-1]], cwd, env)
    assert typo.returncode == 2 and f"close matches: {DEMO}" in typo.stderr
    scenes = ["--num-train", "2", "--num-val", "1", "--size", "48"]
    _ok(_run([bin_dir / "condnet-make-scenes", *scenes], cwd, env))
    assert (cwd / "data" / "scenes" / "cue").is_dir()  # where the configs read
    options = ["runner.max_iters=1", "data.samples_per_gpu=2", "checkpoint.interval=1"]
    train = [bin_dir / "condnet-train", DEMO, "--no-validate", "--cfg-options", *options]
    _ok(_run(train, cwd, env))
    work_dir = cwd / "work_dirs" / DEMO
    assert (work_dir / f"{DEMO}.py").is_file() and list(work_dir.glob("*.pth"))
