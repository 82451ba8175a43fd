"""numpy's and scipy's BLAS pools at one thread inside a search, torch's threads untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from test_study import config
from threadpoolctl import threadpool_info, threadpool_limits

from autocompress import objective
from autocompress.blas_threads import blas_single_threaded
from autocompress.study import run_search


def blas_threads() -> dict[str, int]:
    pools = threadpool_info()
    return {pool["filepath"]: pool["num_threads"] for pool in pools if pool["user_api"] == "blas"}


def test_every_blas_pool_runs_one_thread_in_the_block_and_is_restored_after() -> None:
    with blas_single_threaded():  # loads scipy's BLAS, beside numpy's
        pass
    with threadpool_limits(limits=2, user_api="blas"):  # what they start with on 2 cores
        before = blas_threads()
        assert len(before) >= 2  # numpy's and scipy's own OpenBLAS, both seen
        assert set(before.values()) == {2}
        torch_threads = torch.get_num_threads()
        with blas_single_threaded():
            assert set(blas_threads().values()) == {1}
            assert blas_threads().keys() == before.keys()
            assert torch.get_num_threads() == torch_threads
        assert blas_threads() == before


def test_a_search_fine_tunes_with_one_blas_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, int]] = []
    real_fit = objective.fit

    def fit(*args: Any, **kwargs: Any) -> Any:
        seen.append(blas_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(objective, "fit", fit)
    with threadpool_limits(limits=2, user_api="blas"):
        run_search(config(tmp_path, trials=2), progress=False, echo=lambda _: None)
        assert set(blas_threads().values()) == {2}  # restored after the search
    assert len(seen) == 2 and all(set(pools.values()) == {1} for pools in seen)
