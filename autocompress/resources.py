"""Where the built-in search spaces and experiments live.

A wheel carries them inside the package (``autocompress/_builtin/``, see pyproject's
force-include); a source checkout or editable install finds them beside the package. Looking in
both places lets ``--space prune_only`` work from any working directory either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from autocompress.errors import ConfigError

Kind = Literal["search_spaces", "experiments"]
_PACKAGE_DIR = Path(__file__).resolve().parent


def builtin_dir(kind: Kind) -> Path:
    for candidate in (_PACKAGE_DIR / "_builtin" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise ConfigError(kind, f"built-in {kind} not found next to {_PACKAGE_DIR}; reinstall")


def builtin_names(kind: Kind) -> list[str]:
    return sorted(p.stem for p in builtin_dir(kind).glob("*.yaml"))


def resolve_yaml(kind: Kind, field: str, name_or_path: str) -> Path:
    """A path to an existing YAML file, or the name of a built-in one (``default``)."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        if not path.is_file():
            raise ConfigError(field, f"file '{name_or_path}' does not exist")
        return path.resolve()
    builtin = builtin_dir(kind) / f"{name_or_path}.yaml"
    if not builtin.is_file():
        names = ", ".join(builtin_names(kind))
        raise ConfigError(
            field, f"unknown {kind[:-1].replace('_', ' ')} '{name_or_path}'; built-ins: {names}"
        )
    return builtin
