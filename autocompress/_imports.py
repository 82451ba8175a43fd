"""Load a user callable named as ``path/to/file.py:name`` or ``package.module:name``.

Shared by the data loaders and the model factories so that both kinds of spec resolve the
same way and fail with a one-line error naming the config field that holds the spec.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from autocompress.errors import ConfigError


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``: tracebacks are noise in a one-line error."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_callable(spec: str, field: str, error: type[ConfigError]) -> Callable[..., object]:
    """Resolve ``file.py:name`` (path relative to the cwd) or ``package.module:name``.

    The last ``:`` splits the spec, so a Windows drive letter in the path still works.
    Every failure raises ``error(field, ...)`` so the user sees which setting is wrong.
    """
    source, _, attr = spec.rpartition(":")
    if not source or not attr:
        raise error(field, f"'{spec}' must look like 'file.py:name' or 'package.module:name'")
    if source.endswith(".py"):
        module = _load_file(source, field, error)
    else:
        try:
            module = importlib.import_module(source)
        except Exception as exc:
            raise error(field, f"cannot import module '{source}': {first_line(exc)}") from exc
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(field, f"'{source}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise error(field, f"'{spec}' is a {type(obj).__name__}, not a callable")
    return obj


def _load_file(source: str, field: str, error: type[ConfigError]) -> ModuleType:
    """Execute a Python file as a fresh module (a unique name per path avoids clashes)."""
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise error(field, f"file '{source}' does not exist")
    name = "_autocompress_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise error(field, f"cannot load '{source}' as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before executing so dataclasses and pickling inside the file can find it.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise error(field, f"cannot import '{source}': {first_line(exc)}") from exc
    return module
