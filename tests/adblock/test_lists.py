"""adblock allow rules on long lists: the bulk filter drops exactly the names the rules match."""
from __future__ import annotations

import random

import pytest
from updates.adblock.lists import MANY_SUFFIXES, Rules, load_rules, merge


def names(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    bases = [f"site{i}.{tld}" for i in range(40) for tld in ("com", "net", "org")]
    out = {f"{rng.choice(['', 'ads.', 'a.b.', 'cdn-'])}x{rng.randrange(500)}.{rng.choice(bases)}" for _ in range(count)}
    return sorted(out | set(bases))


@pytest.mark.parametrize("suffixes", [5, MANY_SUFFIXES + 10], ids=["few-suffixes", "many-suffixes"])
def test_bulk_filter_equals_rule_by_rule(suffixes: int) -> None:
    listed = names(20_000, seed=suffixes)
    rng = random.Random(1)
    rules = [f"*.site{i}.com" for i in rng.sample(range(40), min(suffixes, 40))]
    rules += [f"||site{i}.net^" for i in range(max(0, suffixes - 40))]
    rules += ["x7.site3.org", "site9.org", "/^ads\\.x1[0-9]\\./", "/cdn-x4/"]
    allow = load_rules(rules, [], "allow", allow_regex=True)
    expected = [n for n in listed if not allow.matches(n)]
    assert 0 < len(expected) < len(listed)
    assert allow.drop_matching(listed) == expected
    assert merge([listed], allow=allow, deny=Rules()).names == expected


def test_suffix_rule_does_not_match_a_longer_label() -> None:
    allow = load_rules(["*.example.com"], [], "allow", allow_regex=True)
    assert allow.drop_matching(["badexample.com", "example.com", "x.example.com", "example.com.evil.net"]) == [
        "badexample.com", "example.com.evil.net"
    ]


def test_allowed_names_below_a_listed_parent_become_exceptions() -> None:
    listed = sorted([
        "parent-test.org", "ok.parent-test.org", "deep.ok.parent-test.org", "ads.parent-test.org",
        "cdn.other.net", "x.regex-hit.com", "regex-hit.com", "lonely.example.org",
    ])
    allow = load_rules(
        ["ok.parent-test.org", "*.never-listed.parent-test.org", "lonely.example.org", "/^x\\.regex-hit/",
         "free.parent-test.org"],
        [], "allow", allow_regex=True,
    )
    deny = load_rules(["deep.ok.parent-test.org"], [], "deny", allow_regex=False)
    merged = merge([listed], allow=allow, deny=deny)
    assert merged.names == [
        "ads.parent-test.org", "cdn.other.net", "deep.ok.parent-test.org", "parent-test.org", "regex-hit.com",
    ]
    # Below a listed name: the exact rule, the suffix rule's base, a regex hit, a rule no source listed.
    # Not: lonely.example.org (no listed parent), deep.ok (denied, so listed again).
    assert merged.exceptions == [
        "free.parent-test.org", "never-listed.parent-test.org", "ok.parent-test.org", "x.regex-hit.com",
    ]


def test_filter_subdomains_keeps_names_below_an_exception() -> None:
    listed = ["a.parent-test.org", "parent-test.org", "x.ok.parent-test.org", "y.a.parent-test.org"]
    allow = load_rules(["ok.parent-test.org"], [], "allow", allow_regex=True)
    merged = merge([listed], allow=allow, deny=Rules(), filter_subdomains=True)
    # x.ok is covered by parent-test.org, but the exception lifts that cover: it must stay listed.
    assert merged.names == ["parent-test.org", "x.ok.parent-test.org"]
    assert merged.exceptions == ["ok.parent-test.org"]
