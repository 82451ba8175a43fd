"""numpy's and scipy's BLAS thread pools kept to one thread while a search's trials run.

numpy and scipy each load their own OpenBLAS, each with a pool of as many threads as cores,
beside torch's OpenMP pool. Optuna's GP sampler alternates torch's parallel kernels with
scipy's L-BFGS-B and numpy calls, and once scikit-learn had been imported (by the default
digits data, or by the importance plots that end a search) its draws in a LeNet-5 search took
twice as long on 2 cores (draws 11-16: median 342 against 156 ms with the pools at one thread;
OpenMP's threads made to wait passively did as well: thread pools contending for the cores,
docs/BENCHMARKS.md). Nothing a search does with numpy or scipy is large enough to need a BLAS
pool: torch owns the cores.

threadpoolctl changes only the libraries loaded when it is called, so scipy's is loaded first,
there rather than at import: commands that search nothing do not pay for it (0.19 s).
This is the only module that imports threadpoolctl.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits


@contextmanager
def blas_single_threaded() -> Iterator[None]:
    """Within the block every loaded BLAS library runs on one thread; torch's own threads
    (OpenMP, and the MKL inside torch) are left as they are. Restored after."""
    import scipy.linalg  # noqa: F401  loads scipy's OpenBLAS, so that the limit reaches it too

    with threadpool_limits(limits=1, user_api="blas"):
        yield
