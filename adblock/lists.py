"""Allowlist and denylist rules, and the step that merges the parsed sources into the final sorted list.

Contract. A rule is one of:
- `example.com`: exactly that name;
- `*.example.com` or `||example.com^`: that name and every name below it;
- `/regex/`: names the Python regular expression matches (`re.search`, on the lower-case punycode name).
Allow rules remove names coming from the sources. Deny entries (exact names or `*.`/`||` forms, which add
the base name) are added after the allowlist, so an explicit deny wins over a broader allow rule.
Rule files hold one rule per line; `#` starts a comment (except inside a `/regex/`). A hosts line
(`0.0.0.0 name [name...]`, any address in front) or several names on one line are read as exact names, so
that a deny or allow file may be a copy of hosts lines. A bad entry raises one line naming where it is.

In dnsmasq, unbound and AdBlock syntax a listed name blocks its subdomains too, so an allowed name below a
listed one would stay blocked: `merge` also returns these names (`Merged.exceptions`), for which the
renderer writes the exception each resolver understands.
"""
from __future__ import annotations

import bisect
import ipaddress
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.argspec import ArgsError
from .domains import INVALID, RESERVED, normalize
from .order import sorted_names

MANY_SUFFIXES = 64


@dataclass(frozen=True)
class Rules:
    exact: frozenset[str] = frozenset()
    suffixes: frozenset[str] = frozenset()  # base names whose subdomains are covered too
    patterns: tuple[re.Pattern[str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.exact or self.suffixes or self.patterns)

    def matches(self, name: str) -> bool:
        if name in self.exact or name in self.suffixes:
            return True
        if self.suffixes:
            dot = name.find(".")
            while dot != -1:
                if name[dot + 1 :] in self.suffixes:
                    return True
                dot = name.find(".", dot + 1)
        return any(p.search(name) for p in self.patterns)

    def drop_matching(self, names: list[str]) -> list[str]:
        """`names` without those `matches` is true for, in order."""
        return self.partition(names)[0]

    def partition(self, names: list[str]) -> tuple[list[str], list[str]]:
        """(names `matches` is false for, in order; the others, sorted). One C-level pass per kind of
        rule, since calling `matches` a million times takes over a second."""
        result = names
        removed: list[str] = []
        if self.exact and not self.exact.isdisjoint(result):
            removed += self.exact.intersection(result)
            result = list(itertools.filterfalse(self.exact.__contains__, result))
        if self.suffixes and len(self.suffixes) <= MANY_SUFFIXES:
            dotted = tuple("." + suffix for suffix in self.suffixes)
            matched = [n for n in result if n.endswith(dotted) or n in self.suffixes]
        elif self.suffixes:  # endswith would compare each name with every suffix
            matched = list(filter(Rules(suffixes=self.suffixes).matches, result))
        else:
            matched = []
        for pattern in self.patterns:
            matched += filter(pattern.search, result)
        if matched:
            drop = set(matched)
            removed += drop
            result = list(itertools.filterfalse(drop.__contains__, result))
        removed.sort()
        return result, removed


@dataclass
class RuleSet:
    """Rules being collected: the raw rule strings keep their origin for error messages."""

    exact: set[str] = field(default_factory=set)
    suffixes: set[str] = field(default_factory=set)
    patterns: list[re.Pattern[str]] = field(default_factory=list)

    def freeze(self) -> Rules:
        return Rules(frozenset(self.exact), frozenset(self.suffixes), tuple(self.patterns))


def _name(raw: str, origin: str) -> str:
    name = normalize(raw)
    if name is RESERVED:
        why = "a local or reserved name, which is never blocked; remove the entry"
    elif name is INVALID:
        why = "not a valid host name; correct or remove the entry"
    else:
        return name
    raise ArgsError(f"{origin}: {raw!r} is not a blockable domain name ({why})")


def _is_address(token: str) -> bool:
    try:
        ipaddress.ip_address(token)
    except ValueError:
        return False
    return True


def add_rule(rules: RuleSet, rule: str, origin: str, *, allow_regex: bool = True) -> None:
    """Parse one rule string into `rules`; raises ArgsError naming `origin` when it is malformed."""
    text = rule.strip()
    if not text:
        return
    if len(text) >= 2 and text[0] == "/" and text[-1] == "/":
        if not allow_regex:
            raise ArgsError(f"{origin}: regular expressions cannot add names ({text})")
        try:
            rules.patterns.append(re.compile(text[1:-1]))
        except re.error as exc:
            raise ArgsError(f"{origin}: bad regular expression {text}: {exc}") from exc
        return
    tokens = text.split()
    if len(tokens) > 1 or _is_address(text):
        if _is_address(tokens[0]):  # a hosts line: the address is the resolver's answer, not a name
            tokens = tokens[1:]
        if not tokens:
            raise ArgsError(f"{origin}: {text!r} is an address without a name; correct or remove the entry")
        for token in tokens:
            _add_one(rules, token, origin)
    else:
        _add_one(rules, text, origin)


def _add_one(rules: RuleSet, text: str, origin: str) -> None:
    if text.startswith("*."):
        rules.suffixes.add(_name(text[2:], origin))
    elif text.startswith("||") and text.endswith("^"):
        rules.suffixes.add(_name(text[2:-1], origin))
    else:
        rules.exact.add(_name(text, origin))


def read_rule_lines(path: Path) -> Iterable[tuple[int, str]]:
    """(line number, rule) for each rule in a rule file; missing files raise ArgsError."""
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArgsError(f"rule file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ArgsError(f"cannot read rule file {path}: {exc}") from exc
    for number, line in enumerate(content.splitlines(), 1):
        text = line.strip()
        if not text.startswith("/"):
            text = text.split("#", 1)[0].strip()
        if text and not text.startswith("!"):
            yield number, text


def load_rules(inline: Iterable[str], files: Iterable[str], kind: str, *, allow_regex: bool) -> Rules:
    """Rules from the `kind` arg (a list of strings) and `kind_files` (paths)."""
    rules = RuleSet()
    for index, rule in enumerate(inline):
        if not isinstance(rule, str):
            raise ArgsError(f"args.{kind}[{index}]: expected a string, got {type(rule).__name__}")
        add_rule(rules, rule, f"args.{kind}[{index}]", allow_regex=allow_regex)
    for file_name in files:
        path = Path(file_name)
        for number, rule in read_rule_lines(path):
            add_rule(rules, rule, f"{path}:{number}", allow_regex=allow_regex)
    return rules.freeze()


def drop_covered_subdomains(names: list[str], exceptions: Iterable[str] = ()) -> list[str]:
    """Names (sorted) without those whose parent domain is in the list too (hblock's filter-subdomains).
    A name below an exception (an allowed name under a listed parent) is kept: the exception lifts the
    parent's block for its whole subtree, so the name must block on its own."""
    present = set(names)
    lifted = set(exceptions)
    kept = []
    for name in names:
        dot = name.find(".")
        while dot != -1:
            parent = name[dot + 1 :]
            if parent in lifted:
                kept.append(name)
                break
            if parent in present:
                break
            dot = name.find(".", dot + 1)
        else:
            kept.append(name)
    return kept


def _listed_parent(names: list[str], name: str) -> bool:
    dot = name.find(".")
    while dot != -1:
        if _contains(names, name[dot + 1 :]):
            return True
        dot = name.find(".", dot + 1)
    return False


def exceptions_for(names: list[str], allowed: Iterable[str]) -> list[str]:
    """The `allowed` names (sorted, unique) that are not in `names` (sorted) but below a name that is."""
    return sorted({n for n in allowed if not _contains(names, n) and _listed_parent(names, n)})


def _contains(names: list[str], name: str) -> bool:
    index = bisect.bisect_left(names, name)
    return index < len(names) and names[index] == name


@dataclass
class Merged:
    names: Sequence[str]  # sorted, unique: the names to block (a list, or an order.SortedNames)
    exceptions: list[str]  # sorted: allowed names below a name in `names` (see the module docstring)


def merge(
    sources: Iterable[Sequence[str]],
    *,
    allow: Rules,
    deny: Rules,
    filter_subdomains: bool = False,
) -> Merged:
    """The final sorted list from sorted, de-duplicated source lists: their union, minus allowed names,
    plus denied ones, and the exceptions it needs. The input lists are not modified."""
    lists = list(sources)
    union = lists[0] if len(lists) == 1 else sorted_names(list(itertools.chain.from_iterable(lists)))
    if not (allow or deny or filter_subdomains):
        return Merged(union, [])  # as it is: a SortedNames stays blocks of text for render.py
    result = list(union)  # a copy: the input lists are not modified
    removed: list[str] = []
    if allow:
        result, removed = allow.partition(result)
    extra = [name for name in sorted(deny.exact | deny.suffixes) if not _contains(result, name)]
    if extra:
        result = result + extra
        result.sort()
    exceptions: list[str] = []
    if allow:
        # The names the rules removed, and the names they stand for even when no source listed them.
        exceptions = exceptions_for(result, itertools.chain(removed, allow.exact, allow.suffixes))
    if filter_subdomains:
        result = drop_covered_subdomains(result, exceptions)
    return Merged(result, exceptions)
