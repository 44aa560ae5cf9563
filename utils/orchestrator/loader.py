"""Importing update modules from source, and only from source.

Contract: `load_main(name, directory)` imports `<directory>/__init__.py` and `<directory>/index.py` as the
package `updates.<name>` (so `from ..utils.index import ...` works wherever the directory is) and returns the
module's `main`, checked to accept exactly one positional argument. Every file of the module is compiled
from its source: no bytecode is read from or written into the module directory, so the verified digest
covers exactly the code that runs. Each call imports the module afresh, dropping any earlier copy.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

from ..errors import ModuleLoadError

PACKAGE = "updates"


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compile the .py file itself; never consult or write a bytecode cache."""

    def get_code(self, fullname: str) -> CodeType:
        source = self.get_data(self.path)
        return compile(source, self.path, "exec", dont_inherit=True)


class _ModuleFinder(importlib.abc.MetaPathFinder):
    """Finds `updates.<module>[.<sub>...]` for the module directories registered with it."""

    def __init__(self) -> None:
        self.directories: dict[str, Path] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        parts = fullname.split(".")
        if len(parts) < 2 or parts[0] != PACKAGE or parts[1] not in self.directories:
            return None
        if len(parts) == 2:
            return _spec(fullname, self.directories[parts[1]], package=True)
        for entry in path or ():
            base = Path(entry) / parts[-1]
            if (base / "__init__.py").is_file():
                return _spec(fullname, base, package=True)
            if base.with_suffix(".py").is_file():
                return _spec(fullname, base.with_suffix(".py"), package=False)
        return None


def _spec(fullname: str, location: Path, *, package: bool) -> importlib.machinery.ModuleSpec:
    if package:
        init = location / "__init__.py"
        if not init.is_file():
            namespace = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            namespace.submodule_search_locations = [str(location)]
            return namespace
        source = init
    else:
        source = location
    spec = importlib.util.spec_from_file_location(
        fullname,
        source,
        loader=_SourceOnlyLoader(fullname, str(source)),
        submodule_search_locations=[str(location)] if package else None,
    )
    assert spec is not None
    return spec


_FINDER = _ModuleFinder()


def _install_finder() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def forget(name: str) -> None:
    """Drop `updates.<name>` and its submodules from the import cache."""
    prefix = f"{PACKAGE}.{name}"
    for key in [k for k in sys.modules if k == prefix or k.startswith(prefix + ".")]:
        del sys.modules[key]


def load_main(name: str, directory: Path) -> Callable[[dict[str, Any]], Any]:
    """Import the module afresh and return its checked `main`."""
    if PACKAGE not in sys.modules:
        raise ModuleLoadError("the package `updates` is not registered; run through index.py")
    _install_finder()
    forget(name)
    _FINDER.directories[name] = Path(directory)
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        module = importlib.import_module(f"{PACKAGE}.{name}.index")
    except (Exception, SystemExit) as exc:
        forget(name)
        raise ModuleLoadError(f"{name}: import failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.dont_write_bytecode = previous
    main = getattr(module, "main", None)
    if not callable(main):
        raise ModuleLoadError(f"{name}/index.py defines no main(args)")
    try:
        signature = inspect.signature(main)
        signature.bind({})
    except TypeError:
        raise ModuleLoadError(
            f"{name}/index.py: main{signature} must take exactly one argument, args"
        ) from None
    except ValueError:
        return main  # builtins without a signature: let the call itself decide
    return main
