"""`pip install .` then `reconciler run`: the built wheel carries what the daemon needs.

The wheel is built from a copy of the sources (so the checkout gets no ``build/`` or
``*.egg-info``), then checked for the dashboard's static files and the migrations, then
installed with ``--no-deps`` into a fresh virtual environment. Its dependencies come from
the running interpreter's site-packages through a ``.pth`` path line, which does not run
that site's own ``.pth`` files: the editable install of the checkout stays invisible, so
``reconciler`` is imported from the wheel alone. The daemon started from the venv's
console script applies ``examples/`` (migrations on a fresh SQLite file) and answers
``/healthz`` and the dashboard.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services.aio import wait_until
from tests.services.zookeeper import free_ports

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "reconciler"
STATIC = PACKAGE / "api" / "static"
MIGRATIONS = PACKAGE / "store" / "migrations"


def packaged(paths: list[Path]) -> set[str]:
    """The wheel entries (``reconciler/...``) that these source files must become."""
    return {p.relative_to(REPO).as_posix() for p in paths}


def clean_env(venv_root: Path, home: Path) -> dict[str, str]:
    """No PYTHONPATH or virtualenv of the test run: only the wheel's venv."""
    return {"PATH": f"{venv_root / 'bin'}:/usr/bin:/bin", "HOME": str(home),
            "PYTHONUNBUFFERED": "1"}


def build_wheel(out: Path) -> Path:
    src = out / "src"
    src.mkdir()
    shutil.copytree(PACKAGE, src / "reconciler",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", *(p.name for p in REPO.glob("LICENSE*"))):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out / "dist"), str(src)],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list((out / "dist").glob("reconciler-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_the_dashboard_and_the_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    static = packaged([p for p in STATIC.rglob("*") if p.is_file()])
    assert static >= {"reconciler/api/static/index.html", "reconciler/api/static/app.js"}
    migrations = packaged([*MIGRATIONS.glob("*.py"), *MIGRATIONS.glob("*.mako"),
                           *MIGRATIONS.glob("*.ini"), *(MIGRATIONS / "versions").glob("*.py")])
    assert "reconciler/store/migrations/script.py.mako" in migrations
    assert "reconciler/store/migrations/env.py" in migrations
    missing = sorted((static | migrations) - names)
    assert not missing, f"the wheel lacks {missing}"


@pytest.fixture(scope="module")
def wheel_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(root)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    # Dependencies from this interpreter (a plain path line: its .pth files are not run).
    (Path(site) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


@pytest.fixture
def daemon(wheel_venv: Path, tmp_path: Path
           ) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    manifests = tmp_path / "manifests"
    shutil.copytree(REPO / "examples", manifests, ignore=shutil.ignore_patterns("gitops"))
    port = free_ports(1)[0]
    log = tmp_path / "daemon.log"
    env = clean_env(wheel_venv, tmp_path)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(wheel_venv / "bin" / "reconciler"), "run", "--manifests", str(manifests),
             "--listen", f"127.0.0.1:{port}"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", log, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_reconciler_is_imported_from_the_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", "import reconciler; print(reconciler.__file__)"],
        capture_output=True, text=True, timeout=30, check=True, cwd=tmp_path,
        env=clean_env(wheel_venv, tmp_path)).stdout
    assert where.startswith(str(wheel_venv)), where


def test_reconciler_run_from_the_wheel_answers_healthz(
    daemon: tuple[str, Path, subprocess.Popen[bytes]]
) -> None:
    base, log, proc = daemon

    def healthy() -> bool:
        assert proc.poll() is None, f"the daemon exited:\n{log.read_text()}"
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(healthy, 40, "/healthz of the daemon installed from the wheel", interval=0.1)
    page = httpx.get(f"{base}/", timeout=5)
    assert page.status_code == 200 and "<html" in page.text.lower()

    def applied() -> bool:  # /healthz answers before the first apply of the examples
        tasks = httpx.get(f"{base}/api/v1/tasks", timeout=5)
        assert tasks.status_code == 200, tasks.text
        return "heartbeat" in tasks.text

    wait_until(applied, 40, "the examples applied by the daemon from the wheel", interval=0.2)
