"""The grouped sort gives exactly `sorted(set(names))`, whatever the names' lengths and characters, and a
SortedNames reads as that list."""
from __future__ import annotations

import random
import string

import pytest
from updates.adblock.order import SMALL, SortedNames, group, sorted_names, sorted_text

ALPHABET = string.ascii_lowercase + string.digits + "-_."


def random_names(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["".join(rng.choices(ALPHABET, k=rng.choice((1, 1, 2, 3, 5, 12, 30)))) for _ in range(count)]
    return names + rng.sample(names, count // 4)  # repeats, far from their first copy


def lines(text: tuple[bytes, int]) -> list[str]:
    block, count = text
    names = block.decode("ascii").split("\n") if block else []
    assert count == len(names)
    return names


@pytest.mark.parametrize("count", [0, 1, 7, SMALL - 1, SMALL, 50_000])
def test_sorted_names_equal_sorted_set(count: int) -> None:
    names = random_names(count, seed=count)
    expected = sorted(set(names))
    given = list(names)
    result = sorted_names(given)
    assert given == []  # handed over: emptied so that it is freed early
    assert len(result) == len(expected)
    assert list(result) == expected
    assert result == expected  # compares as a list does
    assert result[0:3] == expected[0:3]
    if expected:
        assert result[-1] == expected[-1]


def test_one_character_names_sort_before_longer_names_of_their_key() -> None:
    names = ["ab", "a", "a-", "a.", "b", "a_", "_", "-a", "0", "ab", "a"] * 500
    assert list(sorted_names(list(names))) == sorted(set(names))


def test_groups_of_two_processes_merge_in_order() -> None:
    mine, theirs = random_names(20_000, 1), random_names(20_000, 2)
    groups = group(mine)
    extra = {key: "\n".join(part) for key, part in group(theirs).items()}
    keys = sorted(groups.keys() | extra.keys())
    assert lines(sorted_text(groups, keys, extra)) == sorted(set(mine) | set(theirs))
    assert groups == {} and extra == {}  # taken out as they were written


def test_only_the_given_keys_are_returned_and_taken() -> None:
    names = random_names(10_000, 3)
    groups = group(names)
    low = sorted(key for key in groups if key < "m")
    assert lines(sorted_text(groups, low)) == sorted({n for n in names if n[:2] < "m"})
    assert sorted(groups) == sorted(key for key in group(names) if key >= "m")


def test_a_key_in_neither_group_writes_no_empty_line() -> None:
    groups = group(["ab.com", "ab.net", "cd.org"])
    assert lines(sorted_text(groups, ["ab", "bb", "cd"], {"zz": "zz.com"})) == ["ab.com", "ab.net", "cd.org"]


def test_sorted_names_of_blocks_read_in_order_and_keep_their_blocks_when_iterated() -> None:
    names = SortedNames([(b"a.com\nb.com", 2), (b"", 0), (b"c.com", 1)])
    assert len(names) == 3
    assert list(names) == ["a.com", "b.com", "c.com"]
    assert list(names.parts()) == [b"a.com\nb.com", b"c.com"]  # iterating made names for that pass only
    assert "b.com" in names
    assert names[1] == "b.com"  # indexing makes the list, once
    assert list(names.parts()) == [["a.com", "b.com", "c.com"]]
    assert names == ["a.com", "b.com", "c.com"] and names != ["a.com"]
    assert len(SortedNames([])) == 0 and list(SortedNames([(b"", 0)])) == []


def test_names_joined_as_lines_of_a_list_format_read_back() -> None:
    sep = "/#\naddress=/"  # dnsmasq: the end of one line and the start of the next
    names = sorted_names(["b.com", "a.com", "c.org", "a.com"], sep)
    assert list(names.parts()) == [b"a.com/#\naddress=/b.com/#\naddress=/c.org"]
    assert list(names) == ["a.com", "b.com", "c.org"] and len(names) == 3
    groups = group(["x-y.net", "xa.com", "x-y.net"])
    block, count = sorted_text(groups, sorted(groups), sep="\n0.0.0.0 ")
    assert (block, count) == (b"x-y.net\n0.0.0.0 xa.com", 2)
    assert list(SortedNames([(block, count)], "\n0.0.0.0 ")) == ["x-y.net", "xa.com"]


@pytest.mark.parametrize("sep", ["", " ", "\n\n", "x\ny\nz"])
def test_a_separator_holds_exactly_one_newline(sep: str) -> None:
    with pytest.raises(ValueError, match="one newline"):
        SortedNames([], sep)
