"""Importing update modules from verified source, and only from verified source.

Contract: `load_main(name, directory, verified=None)` imports `<directory>/__init__.py` and
`<directory>/index.py` as the package `updates.<name>` (so `from ..utils.index import ...` works wherever the
directory is) and returns the module's `main`, checked to accept exactly one positional argument.
- Every import under `updates.<name>`, at load time or later from inside `main`, is compiled from the exact
  bytes the module's digest covered: each `.py` file is read once, its SHA-256 compared with the one
  `verified` (a `FolderDigest`) recorded, and those bytes compiled. A file changed or added since, a `.pyc`
  without its `.py`, an extension module or anything else the digest does not cover is refused with an
  `ImportError` naming the file; no other finder gets to load it. No bytecode is read from or written into
  the module directory; with a `cache` (bytecode.py, in the state directory) the code compiled from those
  verified bytes is kept there, keyed by their SHA-256, and taken from there on later runs.
- Without `verified`, the loader digests the directory itself and requires that digest to equal the
  module's `checksum` file (the runner compared that file with the manifest just before).
- Each call imports the module afresh, dropping any earlier copy.
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

from ..digest import FolderDigest, digest_folder, read_checksum_file
from ..errors import ChecksumError, ModuleLoadError
from .bytecode import BytecodeCache

PACKAGE = "updates"


class _VerifiedSourceLoader(importlib.machinery.SourceFileLoader):
    """Compile the bytes the digest covered (or take their code from our own cache, keyed by their hash);
    never consult or write bytecode beside the source."""

    def __init__(
        self, fullname: str, path: str, verified: FolderDigest, rel: str, cache: BytecodeCache | None
    ) -> None:
        super().__init__(fullname, path)
        self._verified = verified
        self._rel = rel
        self._cache = cache

    def get_code(self, fullname: str) -> CodeType:
        try:
            source = self._verified.read_verified(self._rel)
        except ChecksumError as exc:
            message = f"{fullname}: refusing to import: {exc}"
            raise ImportError(message, name=fullname, path=self.path) from exc
        if self._cache is not None:
            return self._cache.code(source, self.path)
        return compile(source, self.path, "exec", dont_inherit=True)


class _ModuleFinder(importlib.abc.MetaPathFinder):
    """Finds `updates.<module>[.<sub>...]` for the module directories registered with it.

    For a registered module it never returns None: the answer is a verified spec or an ImportError, so that
    Python's own path finder never gets to load a `.pyc` or an extension module from the directory. The
    location comes from the dotted name alone, never from a `__path__` the module could have extended.
    """

    def __init__(self) -> None:
        self.modules: dict[str, tuple[FolderDigest, BytecodeCache | None]] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        parts = fullname.split(".")
        if len(parts) < 2 or parts[0] != PACKAGE or parts[1] not in self.modules:
            return None
        verified, cache = self.modules[parts[1]]
        return _verified_spec(fullname, verified, parts[2:], cache)


def _verified_spec(
    fullname: str, verified: FolderDigest, inner: list[str], cache: BytecodeCache | None
) -> importlib.machinery.ModuleSpec:
    rel = "/".join(inner)
    location = verified.top.joinpath(*inner)
    init = f"{rel}/__init__.py" if rel else "__init__.py"
    if init in verified.files:
        return _source_spec(fullname, verified, init, package_dir=location, cache=cache)
    if rel and f"{rel}.py" in verified.files:
        return _source_spec(fullname, verified, f"{rel}.py", package_dir=None, cache=cache)
    if rel in verified.directories:
        # A directory of verified files without __init__.py: a namespace package, as Python would make it.
        namespace = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
        namespace.submodule_search_locations = [str(location)]
        return namespace
    raise _refusal(fullname, location)


def _source_spec(
    fullname: str, verified: FolderDigest, rel: str, *, package_dir: Path | None, cache: BytecodeCache | None
) -> importlib.machinery.ModuleSpec:
    source = str(verified.top / rel)
    spec = importlib.util.spec_from_file_location(
        fullname,
        source,
        loader=_VerifiedSourceLoader(fullname, source, verified, rel, cache),
        submodule_search_locations=[str(package_dir)] if package_dir is not None else None,
    )
    assert spec is not None
    return spec


def _refusal(fullname: str, location: Path) -> ImportError:
    """ImportError naming what Python would have loaded instead of verified source, if anything is there."""
    suffixes = [".py", *importlib.machinery.BYTECODE_SUFFIXES, *importlib.machinery.EXTENSION_SUFFIXES]
    candidates = [location / "__init__.py", *(location / f"__init__{s}" for s in suffixes[1:])]
    candidates += [location.with_name(location.name + suffix) for suffix in suffixes]
    found = next((c for c in candidates if c.exists() or c.is_symlink()), None)
    if found is None:
        return ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
    return ImportError(
        f"{fullname}: refusing to import {found}: not source covered by the module's verified checksum",
        name=fullname,
        path=str(found),
    )


_FINDER = _ModuleFinder()


def _install_finder() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def forget(name: str) -> None:
    """Drop `updates.<name>` and its submodules from the import cache."""
    prefix = f"{PACKAGE}.{name}"
    for key in [k for k in sys.modules if k == prefix or k.startswith(prefix + ".")]:
        del sys.modules[key]


def _snapshot(name: str, directory: Path) -> FolderDigest:
    """The directory's digest now, required to equal its checksum file (when the caller verified nothing)."""
    try:
        verified = digest_folder(directory)
        recorded = read_checksum_file(directory)
    except ChecksumError as exc:
        raise ModuleLoadError(f"{name}: cannot verify before import: {exc}") from exc
    if recorded != verified.digest:
        raise ModuleLoadError(
            f"{name}: checksum mismatch at import: expected {recorded} (checksum file), got {verified.digest}"
        )
    return verified


def load_main(
    name: str, directory: Path, verified: FolderDigest | None = None, *, cache: BytecodeCache | None = None
) -> Callable[[dict[str, Any]], Any]:
    """Import the module afresh from the source `verified` covers and return its checked `main`; `cache`
    keeps and supplies the code compiled from that source."""
    if PACKAGE not in sys.modules:
        raise ModuleLoadError("the package `updates` is not registered; run through index.py")
    directory = Path(directory)
    if verified is None:
        verified = _snapshot(name, directory)
    elif Path(verified.top).absolute() != directory.absolute():
        raise ModuleLoadError(f"{name}: the verified digest is of {verified.top}, not {directory}")
    _install_finder()
    forget(name)
    _FINDER.modules[name] = (verified, cache)
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
