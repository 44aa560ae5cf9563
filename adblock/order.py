"""Sort and de-duplicate large lists of names by groups that fit in the CPU's cache.

Contract: `group(names)` files names under their first KEY characters; `sorted_unique(groups, keys, extra)`
returns the sorted names without duplicates of the groups `keys` (sorted) names, `extra` (another process's
groups for the same keys) merged in; `unique_sorted(names)` does both for one list. Results equal
`sorted(set(names))`. Cutting by the first characters keeps the order: a name filed under an earlier key is
either that key itself (a one-character name) or differs from every later name within the key.

Why: a list of a million names lies scattered over about 60 MB of memory, so sorting it whole makes most
of its twenty-odd comparisons per name a cache miss, and every later pass in sorted order misses again.
About 1,400 groups of a few hundred names are sorted and de-duplicated one at a time while each is in the
cache: about twice as fast, sorting and de-duplication together, for an extra list of pointers.
"""
from __future__ import annotations

import itertools
import operator
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping

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


def sorted_unique(
    groups: Mapping[str, list[str]], keys: Iterable[str], extra: Mapping[str, list[str]] | None = None
) -> list[str]:
    """The names of the groups `keys` (in sorted order) and of the same groups of `extra`, sorted and
    without duplicates. The lists of `groups` are sorted in place."""
    result: list[str] = []
    for key in keys:
        part = groups.get(key)
        more = extra.get(key) if extra else None
        if part is None:
            part = more or []
        elif more:
            part += more
        part.sort()
        result += unique(part)
    return result


def unique_sorted(names: list[str]) -> list[str]:
    """`sorted(set(names))`; `names` is emptied (its owner hands it over, so that it is freed early)."""
    if len(names) < SMALL:
        names.sort()
        result = list(unique(names))
        names.clear()
        return result
    groups = group(names)
    names.clear()
    return sorted_unique(groups, sorted(groups))
