"""autocompress: joint search over per-layer quantization, pruning and distillation.

The public API; everything else is internal and may move.
"""

from __future__ import annotations

from typing import Any

from autocompress.artifact import ArtifactError, load_model
from autocompress.errors import AutocompressError, ConfigError, DataError, ModelError
from autocompress.pareto import ParetoPoint
from autocompress.plan import CompressionPlan

__all__ = [
    "ArtifactError",
    "AutocompressError",
    "CompressionPlan",
    "ConfigError",
    "DataError",
    "ModelError",
    "ParetoPoint",
    "load_model",
    "search",
]
__version__ = "0.1.0"


def search(
    config: str | None = None, *, progress: bool = False, **overrides: Any
) -> list[ParetoPoint]:
    """Run (or resume) a search like ``autocompress search`` and return its Pareto front.

    ``config`` is an experiment file or built-in name; keyword arguments are the experiment's
    keys (``model="lenet5", data="mnist:../shared/data/mnist", trials=20, ...``).
    """
    from autocompress.config import build_config
    from autocompress.study import run_search

    return run_search(build_config(config, overrides), progress=progress, echo=lambda _: None).front
