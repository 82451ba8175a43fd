from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"


def at_once(task: Callable[[], object], workers: int) -> list[Exception]:
    """What ``task`` raised in each of ``workers`` threads released at the same moment, as
    processes started together (a job array) would run it."""
    start = threading.Barrier(workers)
    errors: list[Exception] = []

    def run() -> None:
        start.wait()
        try:
            task()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.fixture(autouse=True, scope="session")
def _teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One teacher cache for the whole session, never the user's ~/.cache."""
    os.environ["AUTOCOMPRESS_CACHE"] = str(tmp_path_factory.mktemp("teacher-cache"))


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The real command in a fresh process, working directory tmp_path."""

    def run(
        *args: str, cwd: Path | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
        return subprocess.run(
            [sys.executable, "-m", "autocompress", *args],
            cwd=cwd or tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server on loopback for this test session; yields a URL with password.

    Needs Debian's ``postgresql`` package (``.ci/run`` installs it). The server runs as the
    ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root) and is
    stopped after the session.
    """
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = Path(found[-1]).parent
    # Not under pytest's temporary directory: that is private to root, and the server runs as
    # the postgres user.
    root = Path(tempfile.mkdtemp(prefix="autocompress-pg-"))
    data, sockets, pwfile = root / "data", root / "sockets", root / "pw"
    sockets.mkdir()
    pwfile.write_text("s3cret\n")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(pwfile, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, cwd=root)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
       "--auth-host=scram-sha-256", "--auth-local=trust")  # fmt: skip
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=100"
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
       "start")  # fmt: skip
    try:
        pg(str(bindir / "createdb"), "-h", str(sockets), "-p", str(port), "-U", "postgres", "ac")
        yield f"postgresql://postgres:s3cret@127.0.0.1:{port}/ac"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
