"""``--workers K``: K local processes on one study, each an ``autocompress worker``.

Separate processes, not threads: each trial is CPU- or GPU-bound PyTorch work, and a process
per worker keeps MLflow's and torch's per-process state apart. The parent process only watches
the study (for the progress bar) and forwards SIGINT/SIGTERM to the workers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

import optuna
import torch

from autocompress.config import ExperimentConfig
from autocompress.errors import AutocompressError
from autocompress.signals import Interrupted

POLL_S = 1.0


def worker_command(config: ExperimentConfig, index: int, threads: int) -> list[str]:
    command = [
        sys.executable, "-m", "autocompress", "worker",
        "--storage", config.storage_url,
        "--study-name", config.resolved_study_name,
        "--mlflow-uri", config.mlflow_tracking_uri,
        "--device", config.device,
        "--worker-index", str(index),
        "--threads", str(threads),
    ]  # fmt: skip
    return command


def run_local_workers(config: ExperimentConfig, study: optuna.Study, progress: Any) -> None:
    """Start the workers, show their progress, and wait; a signal stops them cleanly."""
    threads = max(1, torch.get_num_threads() // config.workers)
    processes = [
        subprocess.Popen(worker_command(config, i, threads)) for i in range(config.workers)
    ]
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while any(p.poll() is None for p in processes):
            time.sleep(POLL_S)
            finished = [
                t for t in study.get_trials(deepcopy=False)
                if t.state.is_finished() and t.number not in seen
            ]  # fmt: skip
            seen |= {t.number for t in finished}
            progress.update(finished)
    except Interrupted as exc:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if exc.signum == signal.SIGTERM else signal.SIGINT)
        for p in processes:
            p.wait()
        raise
    failed = [(i, p.returncode) for i, p in enumerate(processes) if p.returncode != 0]
    if failed:
        detail = ", ".join(f"worker {i} exited with status {code}" for i, code in failed)
        raise AutocompressError(f"workers: {detail}")
