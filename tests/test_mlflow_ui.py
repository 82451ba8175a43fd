"""The MLflow view of a finished study, served by a real ``mlflow server`` on loopback.

One small search runs in-process; the server reads its tracking store (and the runs' file://
artifacts) as a reviewer's would. The REST API must show the parent run, one nested run per
complete trial with its params, metrics, history and files; the UI, in headless Chromium, must
list those runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import ProxyHandler, Request, build_opener

import matplotlib.image
import optuna
import pytest

from autocompress.config import ExperimentConfig, build_config
from autocompress.finetune import validated_epochs
from autocompress.study import run_search

STUDY = "mlp-digits-default"
TRIALS = 4
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server",
]  # fmt: skip
PARENT_ARTIFACTS = {
    "config.json", "search_space.json", "pareto.png", "pareto.csv", "pareto.json",
    "pareto.html", "pareto_layers.png", "pareto_table.json", "report.html",
}  # fmt: skip
PARENT_FOLDERS = {"plots", "teacher"}
TRIAL_METRICS = {"accuracy", "size_bytes", "compression_ratio", "time_finetune_s"}
TRIAL_NAME = re.compile(r"trial-\d{3} \d+\.\dx \d+\.\d{2}%")

# Loopback only: never through a proxy named in the environment.
_OPENER = build_opener(ProxyHandler({}))


@dataclass(frozen=True)
class Server:
    url: str
    out: Path
    log: Path


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]

    @classmethod
    def from_json(cls, run: dict[str, Any]) -> Run:
        info, data = run["info"], run.get("data", {})
        return cls(
            id=info["run_id"],
            name=info["run_name"],
            status=info["status"],
            tags={t["key"]: t["value"] for t in data.get("tags", [])},
            params={p["key"]: p["value"] for p in data.get("params", [])},
            metrics={m["key"]: float(m["value"]) for m in data.get("metrics", [])},
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 30) -> bytes:
    with _OPENER.open(Request(url), timeout=timeout) as response:
        return bytes(response.read())


def api(server: Server, endpoint: str, body: dict[str, Any] | None = None, /, **query: str) -> Any:
    """One call of the tracking REST API: POST with a JSON body, else GET with a query."""
    url = f"{server.url}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = Request(url, data=data, headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=30) as response:
        return json.load(response)


def _wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if _get(f"{url}/health", timeout=2).strip() == b"OK":
                return
        except (URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"mlflow server not up after {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The server and everything it started (its own process group): TERM, then KILL."""
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):  # whatever of the group outlived the TERM
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mlflow-ui")
    out = root / "out"
    overrides = {"out": str(out), "trials": TRIALS, "teacher": {"epochs": 8}}
    config = build_config(None, {**overrides, "early_stop_drop": 1.0})
    run_search(config, progress=False, echo=lambda _: None)

    url = f"http://{HOST}:{_free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", url.rsplit(":", 1)[1],
        "--backend-store-uri", f"sqlite:///{out / 'mlflow.db'}", "--workers", "1",
    ]  # fmt: skip
    env = dict(
        os.environ,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # no job runner and its worker processes
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        PYTHONWARNINGS="ignore",
    )
    log = root / "server.log"
    with log.open("wb") as sink:
        # cwd: the server's default ./mlartifacts (never written here) stays out of the repo.
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_until_up(process, url, log)
        yield Server(url=url, out=out, log=log)
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def study(server: Server) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{server.out / 'optuna.db'}")


@pytest.fixture(scope="module")
def experiment(server: Server) -> dict[str, Any]:
    found: dict[str, Any] = api(server, "experiments/get-by-name", experiment_name=STUDY)
    return dict(found["experiment"])


@pytest.fixture(scope="module")
def runs(server: Server, experiment: dict[str, Any]) -> list[Run]:
    body = {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000}
    found = api(server, "runs/search", body)
    assert "next_page_token" not in found
    return [Run.from_json(r) for r in found["runs"]]


@pytest.fixture(scope="module")
def parent(runs: list[Run]) -> Run:
    parents = [r for r in runs if r.tags.get("autocompress.role") == "study"]
    assert len(parents) == 1, [r.name for r in runs]
    return parents[0]


@pytest.fixture(scope="module")
def children(runs: list[Run], parent: Run) -> list[Run]:
    nested = [r for r in runs if r.tags.get("mlflow.parentRunId") == parent.id]
    assert len(runs) == 1 + len(nested)  # nothing else in the experiment
    return sorted(nested, key=lambda r: int(r.tags["trial"]))


def artifacts(server: Server, run_id: str, path: str | None = None) -> dict[str, dict[str, Any]]:
    """A run's artifacts (one folder level) by path."""
    query = {"run_id": run_id} | ({"path": path} if path else {})
    listed = api(server, "artifacts/list", **query)
    return {f["path"]: f for f in listed.get("files", [])}


def test_one_experiment_named_like_the_study(server: Server, experiment: dict[str, Any]) -> None:
    assert experiment["name"] == STUDY
    assert experiment["lifecycle_stage"] == "active"
    assert experiment["artifact_location"] == (server.out / "mlartifacts").resolve().as_uri()


def test_parent_run_holds_the_study(
    server: Server, parent: Run, study: optuna.Study, children: list[Run]
) -> None:
    assert parent.name == STUDY
    assert parent.status == "FINISHED"
    baseline = study.user_attrs["baseline"]
    assert parent.metrics["baseline_val_accuracy"] == pytest.approx(baseline["val_accuracy"])
    ratios = [r.metrics["compression_ratio"] for r in children if r.tags["pareto"] == "true"]
    assert 0 <= parent.metrics["best_ratio_within_1pt"] <= max(ratios)

    listed = artifacts(server, parent.id)
    files = {p for p, f in listed.items() if not f["is_dir"]}
    folders = {p for p, f in listed.items() if f["is_dir"]}
    assert files >= PARENT_ARTIFACTS, PARENT_ARTIFACTS - files
    assert folders >= PARENT_FOLDERS, PARENT_FOLDERS - folders
    plots = artifacts(server, parent.id, "plots")
    assert plots and all(p.endswith(".png") and f["file_size"] > 1000 for p, f in plots.items())
    teacher = artifacts(server, parent.id, "teacher")
    assert len(teacher) == 1 and next(iter(teacher)).endswith(".pt")

    # The server reads the run's file:// artifacts itself, as the UI's artifact view does.
    query = urlencode({"path": "config.json", "run_uuid": parent.id})
    config = json.loads(_get(f"{server.url}/get-artifact?{query}"))
    assert config["trials"] == TRIALS
    query = urlencode({"path": "pareto.png", "run_uuid": parent.id})
    assert _get(f"{server.url}/get-artifact?{query}").startswith(b"\x89PNG")


def test_one_nested_run_per_complete_trial(
    server: Server, study: optuna.Study, children: list[Run]
) -> None:
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == TRIALS
    assert [int(r.tags["trial"]) for r in children] == [t.number for t in complete]
    front = {t.number for t in study.best_trials}
    for trial, run in zip(complete, children, strict=True):
        assert run.id == trial.user_attrs["mlflow_run_id"]
        assert run.status == "FINISHED"
        assert run.tags["state"] == "COMPLETE"
        assert run.tags["pareto"] == str(trial.number in front).lower()
        assert {"bits/fc1", "keep/fc1"} <= set(run.params)
        assert set(run.metrics) >= TRIAL_METRICS, TRIAL_METRICS - set(run.metrics)
        assert TRIAL_NAME.fullmatch(run.name), run.name
        ratio, accuracy = run.metrics["compression_ratio"], run.metrics["accuracy"]
        assert run.name == f"trial-{trial.number:03d} {ratio:.1f}x {accuracy:.2%}"
        assert accuracy == pytest.approx(trial.values[0])
        assert run.metrics["size_bytes"] == trial.values[1]
        if trial.number in front:  # measured on the front's files after the search
            assert {"test_accuracy", "latency_ms_batch1"} <= set(run.metrics)

        files = artifacts(server, run.id)
        packed = f"trial-{trial.number:04d}.acz"
        assert {"plan.json", packed} <= set(files), files
        assert files[packed]["file_size"] == run.metrics["size_bytes"]

        epochs = trial.user_attrs["plan"]["finetune"]["epochs"]
        history = api(server, "metrics/get-history", run_id=run.id, metric_key="val_accuracy")
        validated = validated_epochs(epochs, ExperimentConfig.validate_every)
        assert [m["step"] for m in history["metrics"]] == sorted(validated)
    assert any(r.tags["pareto"] == "true" for r in children)


@pytest.mark.slow
def test_ui_lists_the_runs(
    server: Server,
    experiment: dict[str, Any],
    parent: Run,
    children: list[Run],
    tmp_path: Path,
) -> None:
    """The experiment's run list, sorted by name: nested runs are shown flat, not folded under
    their parent (MLflow nests children only when runs are sorted by creation time)."""
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed")
    page = (
        f"{server.url}/#/experiments/{experiment['experiment_id']}/runs"
        "?orderByKey=tags.%60mlflow.runName%60&orderByAsc=true"
    )
    shot = tmp_path / "mlflow.png"
    command = [
        str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000", "--window-size=1400,900", f"--screenshot={shot}",
        "--dump-dom", page,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    for run in [parent, *children]:
        assert f">{run.name}<" in dom, f"{run.name!r} not in the rendered run list"
    assert re.search(rf">{1 + len(children)}</strong> matching runs", dom)

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (900, 1400)
    colours = {tuple(p) for p in pixels[::8, ::8, :3].reshape(-1, 3).round(2).tolist()}
    assert len(colours) > 50  # text, icons, the run table: not a blank page
