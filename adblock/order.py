"""Sort and de-duplicate large lists of names by groups that fit in the CPU's cache.

Contract: `group(names)` files names under their first KEY characters; `sorted_text(groups, keys, extra)`
returns the sorted names without duplicates of the groups `keys` (sorted), `extra` (another process's groups
for the same keys) merged in, as one block of text; `sorted_names(names)` does both for one list and returns
a `SortedNames` (blocks of text that read as a sequence of names, see there). Results equal
`sorted(set(names))`. Cutting by the first characters keeps the order: a name filed under an
earlier key is either that key itself (a one-character name) or differs from every later name within the key.

Why: a list of a million names lies scattered over about 60 MB of memory, so sorting it whole makes most
of its twenty-odd comparisons per name a cache miss, and every later pass in sorted order misses again.
About 1,400 groups of a few hundred names are sorted and de-duplicated one at a time while each is in the
cache: about twice as fast, sorting and de-duplication together, for an extra list of pointers.
"""
from __future__ import annotations

import itertools
import operator
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

KEY = 2  # characters; 3 makes groups too small to pay for their bookkeeping, 1 too large for the cache
SMALL = 4096  # names; below this one sort is cheaper than grouping


def group(names: Iterable[str]) -> dict[str, list[str]]:
    """Names filed under their first KEY characters, each group in the order given."""
    groups: defaultdict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[name[:KEY]].append(name)
    return dict(groups)


def unique(ordered: list[str]) -> Iterator[str]:
    """The sorted names `ordered` without repeats (each one that differs from the next): one C-level pass."""
    different = map(operator.ne, ordered, itertools.islice(ordered, 1, None))
    return itertools.compress(ordered, itertools.chain(different, (True,)))


def _runs(
    groups: dict[str, list[str]],
    keys: Iterable[str],
    extra: dict[str, str] | None = None,
    keep: list[list[str]] | None = None,
) -> Iterator[list[str]]:
    """For each of `keys` in turn, its names in `groups` and `extra` (another process's groups, each as
    one string of names joined by newlines) sorted, without repeats. Each group is taken out of `groups`
    and `extra` as it comes: its names are freed once the caller is done with them, still in the cache,
    unless `keep` is given: a process about to end without cleanup (the parse helper) keeps the names of
    `groups` there rather than spend a twentieth of a second freeing half a million names scattered over
    its memory. Those of `extra` are freed all the same: made together from one string, they lie together
    and give their memory back (about 17 MB of the helper's peak at 1,000,000 lines)."""
    for key in keys:
        part = groups.pop(key, None)
        more = extra.pop(key, None) if extra else None
        if part and keep is not None:
            keep.append(part)
        if more:
            part = (part or []) + more.split("\n")
        if part:
            part.sort()
            yield list(unique(part))


def sorted_text(
    groups: dict[str, list[str]],
    keys: Iterable[str],
    extra: dict[str, str] | None = None,
    keep: list[list[str]] | None = None,
    sep: str = "\n",
) -> tuple[bytes, int]:
    """The names of the groups `keys` (in sorted order) and of the same groups of `extra` (see `_runs`),
    sorted and without duplicates, as one block of text (ASCII names joined by `sep`, which holds a
    newline) and their number. The groups are taken out of `groups` and `extra` (and put in `keep`, see
    `_runs`). Each group is joined while its names are in the cache (joining a whole list later misses it
    for nearly every name)."""
    pieces = []
    count = 0
    for run in _runs(groups, keys, extra, keep):
        count += len(run)
        pieces.append(sep.join(run).encode("ascii"))
    return sep.encode("ascii").join(pieces), count


def sorted_names(names: list[str], sep: str = "\n") -> SortedNames:
    """`sorted(set(names))` (ASCII names) as a SortedNames of one block (joined by `sep`, see there);
    `names` is emptied (its owner hands it over, so that it is freed early)."""
    if len(names) < SMALL:
        names.sort()
        unique_names = list(unique(names))
        names.clear()
        return SortedNames([(sep.join(unique_names).encode("ascii"), len(unique_names))], sep)
    groups = group(names)
    names.clear()
    return SortedNames([sorted_text(groups, sorted(groups), sep=sep)], sep)


class SortedNames(Sequence[str]):
    """Sorted names without duplicates, held as blocks of text: ASCII names joined by `sep` (a newline, or
    the end of one line of a list format and the start of the next, such as "\n0.0.0.0 "; one newline), each
    block's names all greater than the block before's. Parsing makes them so (each group joined while in
    the cache), and the parse helper sends its range so (parallel.py).

    Why: a million names as str objects weigh about 60 MB, and rendering them (one join) and freeing
    them misses the cache for nearly every one of them, about a tenth of a second; render.py takes the
    blocks as they are: joined by the separator of its format already, a block is the body of the list.
    Anything that needs the names one by one iterates (the names are made for that pass) or indexes (the
    blocks are turned into a list once, `as_list`)."""

    __slots__ = ("_blocks", "_count", "_names", "sep")

    def __init__(self, blocks: Sequence[tuple[bytes, int]], sep: str = "\n") -> None:
        """`blocks`: (block, the number of names in it) pairs, in order (counting the names of a block
        again would be a pass over it)."""
        if sep.count("\n") != 1:
            raise ValueError(f"a separator of names must hold one newline, got {sep!r}")
        self._blocks = [block for block, count in blocks if count]
        self._count = sum(count for _, count in blocks)
        self._names: list[str] | None = None
        self.sep = sep

    def __len__(self) -> int:
        return self._count

    def parts(self) -> Iterator[list[str] | bytes]:
        """The blocks in order (names joined by `sep`), or the list once there is one (`as_list`)."""
        if self._names is not None:
            yield self._names
        else:
            yield from self._blocks

    def as_list(self) -> list[str]:
        """All names as one list, made once (the blocks are dropped then)."""
        if self._names is None:
            self._names = list(self._from_blocks())
            self._blocks = []
        return self._names

    def _from_blocks(self) -> Iterator[str]:
        # Names never hold a newline and each separator holds one, which fixes where it stands.
        return itertools.chain.from_iterable(block.decode("ascii").split(self.sep) for block in self._blocks)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self.as_list()[index]

    def __iter__(self) -> Iterator[str]:
        # The blocks stay: one pass over the names (a set to compare with) must not undo what they spare.
        return iter(self._names) if self._names is not None else self._from_blocks()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (SortedNames, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"SortedNames({self._count:,} names)"

