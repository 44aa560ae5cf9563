"""The grouped sort gives exactly `sorted(set(names))`, whatever the names' lengths and characters."""
from __future__ import annotations

import random
import string

import pytest
from updates.adblock.order import SMALL, group, sorted_unique, unique_sorted

ALPHABET = string.ascii_lowercase + string.digits + "-_."


def random_names(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["".join(rng.choices(ALPHABET, k=rng.choice((1, 1, 2, 3, 5, 12, 30)))) for _ in range(count)]
    return names + rng.sample(names, count // 4)  # repeats, far from their first copy


@pytest.mark.parametrize("count", [0, 1, 7, SMALL - 1, SMALL, 50_000])
def test_unique_sorted_equals_sorted_set(count: int) -> None:
    names = random_names(count, seed=count)
    expected = sorted(set(names))
    given = list(names)
    assert unique_sorted(given) == expected
    assert given == []  # handed over: emptied so that it is freed early


def test_one_character_names_sort_before_longer_names_of_their_key() -> None:
    names = ["ab", "a", "a-", "a.", "b", "a_", "_", "-a", "0", "ab", "a"] * 500
    assert unique_sorted(list(names)) == sorted(set(names))


def test_groups_of_two_processes_merge_in_order() -> None:
    mine, theirs = random_names(20_000, 1), random_names(20_000, 2)
    groups, extra = group(mine), group(theirs)
    keys = sorted(groups.keys() | extra.keys())
    assert sorted_unique(groups, keys, extra) == sorted(set(mine) | set(theirs))


def test_only_the_given_keys_are_returned() -> None:
    names = random_names(10_000, 3)
    groups = group(names)
    low = sorted(key for key in groups if key < "m")
    assert sorted_unique(groups, low) == sorted({n for n in names if n[:2] < "m"})
