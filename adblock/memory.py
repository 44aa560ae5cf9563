"""Let glibc's malloc keep and reuse large freed buffers while a list is compiled, then give them back.

Contract: `with retained_memory():` raises glibc's mmap threshold (to its maximum, 32 MiB on 64-bit) and trim
threshold for the duration, and on the way out restores the defaults (as fixed values: once set, glibc no
longer adjusts them itself) and hands what is free back to the system (`malloc_trim`). Where there is no
glibc (musl, another libc, no ctypes) it does nothing. The results never depend on it; only speed does.

Why: compiling a list allocates and frees buffers of one to tens of MB over and over (each piece's text,
the blocks of sorted names, the rendered file). By default glibc serves each from a fresh mmap and unmaps
it when freed, so the next one comes back page fault by page fault, zeroed by the kernel (and, in a
virtual machine, often faulted in by the host too): about 30,000 of the 100,000 page faults of a
1,000,000-line run, and a twentieth of a second. Kept in the heap, the same pages serve again. The peak
memory stays the same: the freed buffers are reused, not added to.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_M_TRIM_THRESHOLD = -1  # from <malloc.h>
_M_MMAP_THRESHOLD = -3
_LARGEST_MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit; larger values are refused
_KEEP_FREED = 1 << 30  # bytes of free heap top kept rather than trimmed while the list is compiled
_DEFAULT = 128 << 10  # glibc's initial mmap and trim thresholds


def _glibc() -> Any | None:
    try:
        import ctypes  # noqa: PLC0415 - only here, where it is needed

        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (ImportError, OSError):
        return None


@contextlib.contextmanager
def retained_memory() -> Iterator[None]:
    """See the module docstring."""
    libc = _glibc()
    if libc is None or not libc.mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD):
        yield
        return
    libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT)
        libc.malloc_trim(0)
