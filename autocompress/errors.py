"""The one exception family of autocompress.

Every error a user can cause is an ``AutocompressError`` whose message is one line that names
the offending field and what is allowed; the CLI prints it and exits with status 2.
"""

from __future__ import annotations


class AutocompressError(Exception):
    """Root of every error autocompress raises on purpose."""


class ConfigError(AutocompressError):
    """A bad value in the experiment, the search space or on the command line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DataError(ConfigError):
    """A data spec that cannot be loaded (unknown kind, missing or malformed files)."""


class ModelError(ConfigError):
    """A model spec, factory or checkpoint that cannot be used."""


class ArtifactError(AutocompressError):
    """A file that cannot be read as a compressed model, or a model that cannot be packed."""


class TrialFailed(AutocompressError):
    """A trial whose result cannot be used (NaN or infinite accuracy or loss)."""
