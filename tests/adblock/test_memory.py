"""adblock/memory.py: inside `retained_memory()` glibc reuses large freed buffers; afterwards it gives them
back again. Seen in the page faults of this process: a buffer taken again from a fresh mapping faults in
every page, one reused from the heap none."""
from __future__ import annotations

import resource

import pytest
from updates.adblock.memory import _glibc, retained_memory

SIZE = 16 << 20  # below the raised threshold (32 MiB), above the restored one (128 KiB)
PAGES = SIZE // resource.getpagesize()


def faults_of_taking_buffers_again(times: int = 10) -> int:
    """Minor page faults of making and freeing `times` buffers of SIZE bytes, each written in full."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        buffer = b"x" * SIZE
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_large_buffers_are_reused_inside_and_given_back_after() -> None:
    if _glibc() is None:
        pytest.skip("glibc's malloc only")
    with retained_memory():
        inside = faults_of_taking_buffers_again()
    after = faults_of_taking_buffers_again()
    assert inside < 2 * PAGES  # the first buffer faults its pages in; the others reuse them
    assert after > 5 * PAGES  # fresh mappings again: the defaults are back


def test_without_glibc_it_does_nothing_and_the_work_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("updates.adblock.memory._glibc", lambda: None)
    ran = []
    with retained_memory():
        ran.append(1)
    assert ran == [1]


def test_an_error_inside_still_restores_and_propagates() -> None:
    if _glibc() is None:
        pytest.skip("glibc's malloc only")
    with pytest.raises(ValueError, match="inside"), retained_memory():
        raise ValueError("inside")
    assert faults_of_taking_buffers_again() > 5 * PAGES
