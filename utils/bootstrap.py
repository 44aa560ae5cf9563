"""Make the installed directory importable as the package `updates`; the one place that does it.

Contract: `register_package()` registers the directory above `utils/` as the package `updates`, whatever
the folder is called (a checkout in `main/` works like the install in `updates/`), and returns it; a second
call returns the registered package. `script_package(file)` does the same for a file under `utils/` that is
run as a script (`python utils/rollback.py`) and returns the dotted package to assign to `__package__`, so
that the script's own relative imports work without importing the file a second time; it also takes the
script's directory off `sys.path`, where its `http.py` would shadow the standard library's `http`.

This file imports nothing from the package, because it runs before the package exists: index.py, the
design-named scripts and the tests' conftest load it by path (`runpy.run_path`) and call it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "updates"


def register_package(root: Path = ROOT) -> ModuleType:
    """The package `updates` rooted at `root`, registered in `sys.modules` on first use."""
    existing = sys.modules.get(PACKAGE)
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(
        PACKAGE, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {root / '__init__.py'} as the package {PACKAGE}")
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[PACKAGE]
        raise
    return package


def script_package(script: str) -> str:
    """Register the package for a script file under the root and return the script's dotted package."""
    path = Path(script).resolve()
    sys.path[:] = [entry for entry in sys.path if not entry or Path(entry).resolve() != path.parent]
    register_package()
    return ".".join([PACKAGE, *path.parent.relative_to(ROOT).parts])
