"""adblock parsing: hblock conformance on its golden files, line rules, and the real lists in ../shared."""
from __future__ import annotations

from pathlib import Path

import pytest
from adblock_support import block_names, fixture, module_args
from updates.adblock.domains import INVALID, RESERVED, normalize
from updates.adblock.index import main
from updates.adblock.parse import COMMENT, OK, UNSUPPORTED, parse_line, parse_list

HBLOCK_CHECK = "hblock-check.molinero.dev"  # hblock's built-in denylist entry, not part of the source


def golden(name: str) -> list[str]:
    """The domains of an hblock expected output, without its header lines and built-in check domain."""
    lines = fixture(name).read_text().splitlines()
    block = lines[lines.index("# BEGIN BLOCKLIST") + 1 : lines.index("# END BLOCKLIST")]
    return [line.split()[1] for line in block if line.split()[1] != HBLOCK_CHECK]


def compile_source(tmp_path: Path, **extra: object) -> list[str]:
    source = fixture("hblock-test-domains-source.txt")
    result = main(module_args(tmp_path, [f"file://{source}"], **extra))
    assert result is not None and result["changed"] is True
    return block_names(tmp_path / "hosts")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "hblock-test-main-feature-lenient-false.out"),
        ({"lenient": True}, "hblock-test-main-feature-lenient-true.out"),
        ({"filter_subdomains": True}, "hblock-test-main-feature-filter-subdomains-true.out"),
        ({"filter_subdomains": False}, "hblock-test-main-feature-filter-subdomains-false.out"),
        ({"allow_files": ["ALLOW"]}, "hblock-test-main-feature-allowlist.out"),
        ({"deny_files": ["DENY"]}, "hblock-test-main-feature-denylist.out"),
        ({"allow": ["/.*-00[0-3]\\.com$/", "/^entry-with-comment-/"]}, "hblock-test-main-feature-regex-true.out"),
    ],
    ids=["default", "lenient", "filter-subdomains", "no-filter", "allowlist", "denylist", "regex-allowlist"],
)
def test_matches_hblock_golden_output(tmp_path: Path, extra: dict, expected: str) -> None:
    for key, placeholder, name in (("allow_files", "ALLOW", "hblock-allowlist.txt"),
                                   ("deny_files", "DENY", "hblock-denylist.txt")):
        if extra.get(key) == [placeholder]:
            extra = {**extra, key: [str(fixture(name))]}
    assert compile_source(tmp_path, **extra) == golden(expected)


def test_exact_allowlist_lines_equal_hblock_fixed_string_mode(tmp_path: Path) -> None:
    # regex-false.out: hblock took the two regex lines as literal names (matching nothing) and
    # `single-entry-000.com` as an exact name; our exact rules behave the same.
    names = compile_source(tmp_path, allow=["single-entry-000.com"])
    assert names == golden("hblock-test-main-feature-regex-false.out")


@pytest.mark.parametrize(
    ("line", "names", "status"),
    [
        ("0.0.0.0 ads.example.com", ["ads.example.com"], OK),
        ("127.0.0.1\tADS.Example.COM.", ["ads.example.com"], OK),
        ("::1 a.com b.com", ["a.com", "b.com"], OK),
        (":: a.com", ["a.com"], OK),
        ("  a.com   # trailing comment", ["a.com"], OK),
        ("a.com#no space", ["a.com"], OK),
        ("||tracker.example.net^", ["tracker.example.net"], OK),
        ("||tracker.example.net^$third-party", [], UNSUPPORTED),
        ("||tracker.example.net^ # why it is listed", ["tracker.example.net"], OK),
        ("@@||allowed.example.net^", [], UNSUPPORTED),
        ("||example.net/ads/*", [], UNSUPPORTED),
        ("example.com##.banner", [], UNSUPPORTED),
        ("! AdBlock comment", [], COMMENT),
        ("[Adblock Plus 2.0]", [], COMMENT),
        ("# 0.0.0.0 commented.example.com", [], COMMENT),
        ("192.168.1.1 router.example.com", [], INVALID),  # strict mode: only the four blocking prefixes
        ("0.0.0.0", [], INVALID),
        ("0.0.0.0 a.com 0.0.0.0", [], INVALID),
        ("a.com -bad.com", [], INVALID),  # one invalid name rejects the whole line
        ("a..b.com", [], INVALID),
        ("bad-.example.com", [], INVALID),
        ("under_score.example.com", ["under_score.example.com"], OK),
        ("xn--80ak6aa92e.com", ["xn--80ak6aa92e.com"], OK),
        ("127.0.0.1 localhost", [], OK),  # reserved: dropped quietly, not an invalid line
        ("0.0.0.0 printer.lan real.example.org", ["real.example.org"], OK),
        ("bücher.example", [], OK),  # IDN, but under the reserved .example
        ("0.0.0.0 Bücher.de", ["xn--bcher-kva.de"], OK),
        ("ПРИМЕР.рф", ["xn--e1afmkfd.xn--p1ai"], OK),
        ("0.0.0.0 ☃.net", [], INVALID),  # symbols are not valid IDNA 2008 names
    ],
)
def test_parse_line(line: str, names: list[str], status: str) -> None:
    found, got_status, _reserved = parse_line(line)
    assert (found, got_status) == (names, status)


def test_lenient_accepts_any_address_prefix() -> None:
    assert parse_line("192.168.1.1 router.example.com", lenient=True)[:2] == (["router.example.com"], OK)
    assert parse_line("fe80::1 x.example.com", lenient=True)[:2] == (["x.example.com"], OK)
    assert parse_line("999.1.1.1 x.example.com", lenient=True)[1] == INVALID


def test_normalize_rules() -> None:
    assert normalize("Example.COM.") == "example.com"
    assert normalize("a" * 64 + ".com") is INVALID
    assert normalize("a" * 63 + ".com") == "a" * 63 + ".com"
    assert normalize(".".join(["a" * 50] * 5) + ".com") is INVALID  # 259 characters
    assert normalize("nas.home.arpa") is RESERVED
    assert normalize("localhost") is RESERVED
    assert normalize("com") is INVALID
    assert normalize("a.c") is INVALID
    assert normalize("a.1com") is INVALID


def test_fast_and_careful_paths_agree_line_by_line() -> None:
    lines = [
        "0.0.0.0 ok.example.com", "0.0.0.0 ok2.example.com.", "127.0.0.1\tUP.Example.com",
        "plain.example.org", "plain2.example.org # c", "   lead.example.org", "a--b.example.org",
        "x-.example.org", "-x.example.org", "x.-y.org", "x..y.org", "x.y.local", "x.y.lan.", "x.home.arpa",
        "x.hosting", "x.localhost-ish", "0.0.0.0 " + "a" * 64 + ".com", "::1 v6.example.com",
        "x_y.example.com", "x.y_z", "0.0.0.0 x.y.co.uk", "x.example.c0m", "x.example.co-",
    ]
    whole = parse_list(("\n".join(lines) + "\n").encode()).names
    one_by_one: dict[str, None] = {}
    for line in lines:
        one_by_one.update(dict.fromkeys(parse_line(line)[0]))
    assert sorted(whole) == sorted(one_by_one)


def test_crlf_tabs_bom_and_missing_final_newline() -> None:
    data = "\ufeff0.0.0.0 first.example.com\r\n\t127.0.0.1\tSecond.Example.com\r\nthird.example.com".encode()
    assert sorted(parse_list(data).names) == ["first.example.com", "second.example.com", "third.example.com"]


def test_undecodable_bytes_reject_their_line_only() -> None:
    parsed = parse_list(b"0.0.0.0 good.example.com\n0.0.0.0 bad\xff.example.com\n")
    assert list(parsed.names) == ["good.example.com"]
    assert parsed.stats.invalid == 1


def test_hosts_fixture_with_crlf() -> None:
    # FadeMind add.2o7Net: 2,030 lines, each `0.0.0.0 <name>\r\n`, all distinct -> 2,030 names.
    parsed = parse_list(fixture("hosts.extras-add.2o7Net-hosts").read_bytes())
    assert parsed.stats.lines == 2030
    assert parsed.stats.names == 2030
    assert parsed.stats.invalid == parsed.stats.unsupported == 0
    assert "sanalytics.spark.co.nz" in parsed.names


def test_adaway_hosts_fixture() -> None:
    data = fixture("adaway.github.io-hosts.txt").read_bytes()
    parsed = parse_list(data)
    entries = [line.split() for line in data.decode().splitlines() if line and not line.startswith("#")]
    # Every non-comment line is `127.0.0.1 <name>` or `::1 localhost`; the two localhost lines are reserved.
    assert all(len(e) == 2 and e[0] in ("127.0.0.1", "::1") for e in entries)
    localhost = [e for e in entries if e[1] == "localhost"]
    assert len(localhost) == 2
    assert parsed.stats.reserved == 2
    assert parsed.stats.names == len({e[1].lower() for e in entries} - {"localhost"}) == 6540
    assert parsed.stats.invalid == 0


def test_adblock_syntax_fixture_with_modifiers() -> None:
    data = fixture("adblock-nocoin-list-nocoin.txt").read_bytes()
    lines = [line.strip() for line in data.decode().splitlines()]
    rules = [line for line in lines if line and not line.startswith(("!", "["))]
    plain = [line for line in rules if line.startswith("||") and line.endswith("^") and "$" not in line]
    # 48 plain `||name^` rules; one of them is an IP address (`||45.15.156.210^`), not a name.
    assert len(plain) == 48
    parsed = parse_list(data)
    assert parsed.stats.names == 47
    assert "||45.15.156.210^" in parsed.stats.samples
    # The rest are rules with modifiers, paths or wildcards (unsupported) and four URL fragments that are
    # not host names (`-coin-hive.js`, `-monero-miner-`, `.aspx?poolid=`, `.cfm?poolid=`: invalid).
    assert parsed.stats.invalid == 5
    assert parsed.stats.unsupported == len(rules) - 48 - 4


def test_smarttv_adblock_and_plain_lists() -> None:
    plain = parse_list(fixture("PiHoleBlocklist-SmartTV.txt").read_bytes())
    agh_data = fixture("PiHoleBlocklist-SmartTV-AGH.txt").read_bytes()
    agh = parse_list(agh_data)
    lines = agh_data.decode().splitlines()
    rules = [line for line in lines if line and not line.startswith("!")]
    plain_rules = [line for line in rules if line.startswith("||") and line.endswith("^")]
    wildcards = [line for line in plain_rules if "*" in line]
    # 139 `||name^` rules plus one with a trailing `# https://...` comment give the 140 names. Unsupported:
    # 3 wildcard rules (`||hbbtv.*.de^`), 9 `@@` exceptions, 4 `|name^` address anchors, 2 truncated
    # `||name.` rules and 4 `$ctag` rules.
    assert len(plain_rules) - len(wildcards) == 139
    assert len(wildcards) == 3
    assert sum(line.startswith("@@") for line in rules) == 9
    assert agh.stats.names == 140
    assert agh.stats.unsupported == len(rules) - 140 == 3 + 9 + 4 + 2 + 4
    assert "api.thetake.com" in agh.names
    assert agh.stats.invalid == plain.stats.invalid == 0


def test_pihole_regex_list_yields_nothing() -> None:
    parsed = parse_list(fixture("PiHoleBlocklist-regex.list").read_bytes())
    assert parsed.stats.names == 0
    assert parsed.stats.unsupported > 0


COSMETIC_RULES = [
    "reddit.com##.promotedlink",
    "reddit.com#@#.promotedlink",
    "reddit.com#?#div:has(> .ad)",
    "reddit.com#$#body { overflow: auto !important; }",
    "reddit.com##+js(set-constant, ads, false)",
    "reddit.com#%#//scriptlet('abort-on-property-read', 'ads')",
    "reddit.com#@$?#.ad { display: none !important; }",
    "reddit.com.##.ad",
]


@pytest.mark.parametrize("rule", COSMETIC_RULES)
@pytest.mark.parametrize("shape", ["{}", "   {}", "\t{}\t"], ids=["fast", "leading-blanks", "tabs"])
def test_cosmetic_and_scriptlet_rules_never_block_their_site(rule: str, shape: str) -> None:
    """Element hiding and scriptlets clean a page up; blocking the site's name would take the site down."""
    line = shape.format(rule)
    parsed = parse_list(f"0.0.0.0 kept.example.net\n{line}\n".encode())
    assert parsed.names == ["kept.example.net"]
    assert parsed.stats.unsupported == 1
    assert parse_line(line) == ([], UNSUPPORTED, 0)


@pytest.mark.parametrize(
    ("line", "names"),
    [
        (" 0.0.0.0 a.example.com # see https://x.org/y", ["a.example.com"]),
        ("0.0.0.0 a.example.com b.example.com # https://x.org/y?q=1&r=$2", ["a.example.com", "b.example.com"]),
        ("a.example.com. # 2020/01/01", ["a.example.com"]),
        ("0.0.0.0 a.example.com #see ||b.example.com^ and x.org##.ad", ["a.example.com"]),
        ("a.example.com.\t# *.example.com @home", ["a.example.com"]),
        ("||a.example.com^ # from https://x.org/list", ["a.example.com"]),
    ],
)
def test_comments_with_adblock_characters_keep_their_line(line: str, names: list[str]) -> None:
    """hblock cuts the comment first and blocks these names; so must both of our paths."""
    assert parse_line(line)[:2] == (names, OK)
    assert parse_list(f"{line}\n".encode()).names == sorted(names)


def test_an_invalid_name_rejects_its_line_even_beside_a_reserved_one() -> None:
    line = "0.0.0.0 bad..x.local good.example.com"
    assert parse_line(line) == ([], INVALID, 0)
    parsed = parse_list(f"{line}\n0.0.0.0 other.example.com\n".encode())
    assert parsed.names == ["other.example.com"]
    assert parsed.stats.invalid == 1
    assert normalize("bad..x.local") is INVALID
    assert normalize("-x.lan") is INVALID
    assert normalize("printer.lan") is RESERVED
    assert normalize("localhost") is RESERVED  # one label, but the machine's own name: dropped quietly


def test_exclamation_mark_comments_are_whole_lines_only_as_in_hblock() -> None:
    # hblock strips `#` comments only; AdBlock syntax has `!` comments at the start of a line only.
    assert parse_line("! a.example.com") == ([], COMMENT, 0)
    assert parse_line("   ! indented note") == ([], COMMENT, 0)
    assert parse_line("a.example.com ! note")[1] == INVALID


def test_fast_and_careful_paths_agree_on_random_lines() -> None:
    """Lines assembled from the pieces real lists mix: each line alone through the whole-text path (fast
    pattern first) gives what the careful path gives."""
    import random

    rng = random.Random(11)
    prefixes = ["", "0.0.0.0 ", "127.0.0.1\t", ":: ", "::1  ", " ", "\t0.0.0.0 ", "1.2.3.4 ", "0.0.0.0"]
    names = ["a.example.com", "x-y.example.org", "-bad.com", "bad-.com", "a..b.com", "under_s.co.uk", "a.c",
             "host.local", "nas.home.arpa", "x.in-addr.arpa", "a.b.localhost-ish", "ex.c0m", "ex.co-", "ex.com.",
             "localhost", "a" * 64 + ".com", "b" * 63 + ".net", "x.internal", "ok.test"]
    tails = ["", " ", "\t", "#c", " # c", " # see https://x.org/a?b=$1|^*@", "##.ad", "#@#.ad", "#?#x",
             " ##.ad", "#$#x", "##+js(x)", " ! note", "#", ".#x"]
    for _ in range(3000):
        line = rng.choice(prefixes) + " ".join(rng.sample(names, rng.choice([1, 1, 1, 2]))) + rng.choice(tails)
        expected, status, _ = parse_line(line)
        parsed = parse_list(f"{line}\n".encode(), parallel=False)
        assert parsed.names == sorted(set(expected)), line
        assert (parsed.stats.invalid, parsed.stats.unsupported) == (status == INVALID, status == UNSUPPORTED), line
