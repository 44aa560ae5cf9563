"""adblock installation on files in tmp_path: the managed hosts block, no-op runs, crashes, bind mounts,
the shrink guard, backups, reload, and argument checks."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from adblock_support import block_names, hosts_list, module_args, numbered
from updates.adblock.config import ARG_SPEC, DEFAULT_SOURCES, Options
from updates.adblock.index import main
from updates.adblock.install import read_current, write_file
from updates.utils.argspec import ArgsError
from updates.utils.errors import UpdatesError

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


USER_BEFORE = b"127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n#  my own comment  \n\n192.168.1.5 nas\n"
USER_AFTER = b"10.0.0.7   printer.lan   # set by hand\n   \n"


def write_source(tmp_path: Path, names: list[str], name: str = "list.txt") -> str:
    path = tmp_path / name
    path.write_bytes(hosts_list(names))
    return f"file://{path}"


def counter(tmp_path: Path) -> tuple[list[str], Path]:
    marker = tmp_path / "reloads"
    return ["sh", "-c", 'echo reloaded >> "$0"', str(marker)], marker


def test_first_install_appends_block_and_keeps_user_lines(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(USER_BEFORE.rstrip(b"\n"))  # no final newline
    main(module_args(tmp_path, [write_source(tmp_path, ["b.example.com", "a.example.com"])]))
    data = hosts.read_bytes()
    assert data.startswith(USER_BEFORE + b"# BEGIN updates-adblock\n")
    assert data.endswith(b"0.0.0.0 a.example.com\n0.0.0.0 b.example.com\n# END updates-adblock\n")


def test_block_between_user_lines_is_replaced_byte_for_byte(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    old_block = b"# BEGIN updates-adblock\n0.0.0.0 old.example.com\n# END updates-adblock\n"
    hosts.write_bytes(USER_BEFORE + old_block + USER_AFTER)
    source = write_source(tmp_path, ["new.example.com"])
    result = main(module_args(tmp_path, [source], shrink_guard=0))
    assert result == {"changed": True, "summary": "+1 -1 = 1 domains from 1/1 sources"}
    data = hosts.read_bytes()
    assert data.startswith(USER_BEFORE + b"# BEGIN updates-adblock\n")
    assert data.endswith(b"\n0.0.0.0 new.example.com\n# END updates-adblock\n" + USER_AFTER)
    assert (tmp_path / "state" / "backups" / "hosts.bak").read_bytes() == USER_BEFORE + old_block + USER_AFTER


def test_same_content_means_no_write_and_no_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reload, marker = counter(tmp_path)
    hosts = tmp_path / "hosts"
    hosts.write_bytes(USER_BEFORE)
    args = module_args(tmp_path, [write_source(tmp_path, numbered("ads", 50))], reload=reload)
    assert main(args)["changed"] is True
    assert marker.read_text() == "reloaded\n"
    before = hosts.stat()
    # A later day: the header's date would differ, the list does not. The source file is rewritten with the
    # same content (new mtime), so the full compile runs and finds nothing to change.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "2000000000")
    write_source(tmp_path, numbered("ads", 50))
    result = main(args)
    assert result == {"changed": False, "summary": "50 domains from 1/1 sources, unchanged"}
    after = hosts.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert marker.read_text() == "reloaded\n"
    # And with nothing modified at all, the shortcut answers before parsing.
    assert main(args) == {"changed": False, "summary": "50 domains, all sources unchanged"}
    assert hosts.stat().st_mtime_ns == before.st_mtime_ns


def test_hand_edit_inside_the_block_is_repaired(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    args = module_args(tmp_path, [write_source(tmp_path, ["x.example.com", "y.example.com"])])
    main(args)
    hosts.write_bytes(hosts.read_bytes().replace(b"0.0.0.0 y.example.com\n", b""))
    assert main(args)["changed"] is True
    assert block_names(hosts) == ["x.example.com", "y.example.com"]


def test_crash_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(USER_BEFORE)
    names = numbered("crash-test-name", 5000)
    source = tmp_path / "list.txt"
    source.write_text("".join(f"{n}\n" for n in names))  # plain names: the hosts output is larger
    args = module_args(tmp_path, [f"file://{source}"])
    limit = int(source.stat().st_size * 1.15)  # room for the cache copy, not for the new hosts file
    child = (
        "import json, resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import conftest\n"
        "from updates.adblock.index import main\n"
        "main(json.loads(sys.argv[1]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, json.dumps(args)], check=False, capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr.decode()
    assert hosts.read_bytes() == USER_BEFORE
    leftovers = list(tmp_path.glob(".hosts.*.tmp"))
    assert leftovers and leftovers[0].stat().st_size > 0  # it really died half way through the new file
    assert main(args)["changed"] is True
    assert block_names(hosts) == names
    assert not list(tmp_path.glob(".hosts.*.tmp"))


def test_damaged_markers_are_refused(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    content = USER_BEFORE + b"# BEGIN updates-adblock\n0.0.0.0 x.example.com\n"
    hosts.write_bytes(content)
    with pytest.raises(UpdatesError, match="markers are damaged"):
        main(module_args(tmp_path, [write_source(tmp_path, ["a.example.com"])]))
    assert hosts.read_bytes() == content


def test_shrink_guard_refuses_then_force_accepts(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    reload, marker = counter(tmp_path)
    main(module_args(tmp_path, [write_source(tmp_path, numbered("ads", 1000))]))
    installed = hosts.read_bytes()
    # A new state dir (no cached copy to fall back to) and a source that lost 60% of its names.
    other = tmp_path / "other"
    other.mkdir()
    args = module_args(other, [write_source(tmp_path, numbered("ads", 400))], output=str(hosts), reload=reload)
    with pytest.raises(UpdatesError, match=r"refusing to shrink the blocklist from 1,000 to 400 domains"):
        main(args)
    assert hosts.read_bytes() == installed
    assert not marker.exists()
    assert main({**args, "shrink_guard": 0.3})["changed"] is True
    assert len(block_names(hosts)) == 400
    main({**args, "sources": [write_source(tmp_path, numbered("ads", 100))], "force": True})
    assert len(block_names(hosts)) == 100
    assert marker.read_text() == "reloaded\nreloaded\n"


def test_ipv6_twin_lines_count_once(tmp_path: Path) -> None:
    args = module_args(tmp_path, [write_source(tmp_path, ["a.example.com", "b.example.com"])], redirect_ipv6="::")
    main(args)
    assert (tmp_path / "hosts").read_text().endswith(
        "\n0.0.0.0 a.example.com\n:: a.example.com\n0.0.0.0 b.example.com\n:: b.example.com\n# END updates-adblock\n"
    )
    result = main({**args, "sources": [write_source(tmp_path, ["b.example.com", "c.example.com"])]})
    assert result == {"changed": True, "summary": "+1 -1 = 2 domains from 1/1 sources"}


def test_skipped_source_is_named_in_the_summary(tmp_path: Path) -> None:
    sources = [write_source(tmp_path, ["a.example.com"]), {"url": "file:///nonexistent/list", "name": "gone"}]
    result = main(module_args(tmp_path, sources))
    assert result == {"changed": True, "summary": "+1 -0 = 1 domains from 1/2 sources (skipped: gone)"}


def test_reload_failure_is_reported_after_the_write(tmp_path: Path) -> None:
    args = module_args(tmp_path, [write_source(tmp_path, ["a.example.com"])], reload=["sh", "-c", "exit 3"])
    with pytest.raises(UpdatesError, match=r"blocklist written .* but the reload command failed: .*exit code 3"):
        main(args)
    assert block_names(tmp_path / "hosts") == ["a.example.com"]


def test_failed_reload_is_retried_by_the_next_run(tmp_path: Path) -> None:
    flag = tmp_path / "reload-works"
    marker = tmp_path / "reloads"
    # Fails until the flag file exists (a resolver that was down), then records each reload.
    reload = ["sh", "-c", 'test -e "$0" && echo reloaded >> "$1"', str(flag), str(marker)]
    args = module_args(tmp_path, [write_source(tmp_path, ["a.example.com"])], reload=reload)
    with pytest.raises(UpdatesError, match="reload command failed"):
        main(args)
    with pytest.raises(UpdatesError, match="unchanged, but the reload command failed again"):
        main(args)  # same list: nothing to write, but the resolver has still not loaded it
    assert not marker.exists()
    assert main({**args, "dry_run": True})["summary"].endswith("would retry the reload that failed last time")
    assert not marker.exists()
    flag.touch()
    assert main(args) == {
        "changed": True, "summary": "1 domains, all sources unchanged; reloaded (the last reload had failed)",
    }
    assert main(args) == {"changed": False, "summary": "1 domains, all sources unchanged"}
    assert marker.read_text() == "reloaded\n"


def test_whole_file_install_for_other_formats(tmp_path: Path) -> None:
    out = tmp_path / "blocklist.conf"
    args = module_args(tmp_path, [write_source(tmp_path, ["a.example.com"])], format="dnsmasq", output=str(out))
    main(args)
    text = out.read_text()
    assert text.startswith("# Generated by the updates adblock module\n")
    assert text.endswith("\n\naddress=/a.example.com/#\n")
    current = read_current(out, block=False)
    assert current.ours() == out.read_bytes()
    assert current.body() == b"address=/a.example.com/#\n"


def mount_bind(source: Path, target: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    proc = subprocess.run(["mount", "--bind", str(source), str(target)], check=False, capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {proc.stderr.decode().strip()}")


@pytest.mark.parametrize("detect", [True, False], ids=["mountinfo", "ebusy-fallback"])
def test_bind_mounted_hosts_is_rewritten_in_place(tmp_path: Path, detect: bool) -> None:
    real = tmp_path / "real-hosts"
    real.write_bytes(USER_BEFORE)
    hosts = tmp_path / "hosts"
    hosts.write_bytes(b"")
    mount_bind(real, hosts)
    try:
        current = read_current(hosts, block=True)
        new = USER_BEFORE + b"# BEGIN updates-adblock\n0.0.0.0 a.example.com\n# END updates-adblock\n"
        empty = tmp_path / "no-mounts"
        empty.write_text("")
        how = write_file(hosts, new, current.full, tmp_path / "backups",
                         **({} if detect else {"mountinfo": empty}))
        assert how == "in place"
        assert hosts.read_bytes() == new
        assert real.read_bytes() == new  # the file behind the mount got it: no new inode was swapped in
        assert (tmp_path / "backups" / "hosts.bak").read_bytes() == USER_BEFORE
        assert not list(tmp_path.glob(".hosts.*.tmp"))
    finally:
        subprocess.run(["umount", str(hosts)], check=True)


def test_every_arg_is_documented_with_its_default() -> None:
    readme = (ROOT / "adblock" / "README.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z0-9_]+)` \| (.+?) \|", readme, re.MULTILINE))
    assert set(documented) == set(ARG_SPEC)
    for name, (default, _types) in ARG_SPEC.items():
        if name == "sources":
            assert all(f"`{url}`" in readme for url in default)
        elif default is not None:
            assert json.dumps(default) in documented[name], name
    for fmt in ("/etc/hosts", '"format": "dnsmasq"', '"format": "unbound"'):  # the three examples
        assert fmt in readme


def test_default_args_are_safe() -> None:
    opts = Options.from_args({"name": "adblock", "dry_run": False, "state_dir": "/unused"})
    assert [s.url for s in opts.sources] == list(DEFAULT_SOURCES)
    assert all(url.startswith("https://") for url in DEFAULT_SOURCES)
    assert (opts.format, str(opts.output), opts.block) == ("hosts", "/etc/hosts", True)
    assert (opts.shrink_guard, opts.force, opts.reload, opts.lenient) == (0.5, False, None, False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"sourcse": []}, "unknown arg"),
        ({"reload": "systemctl reload dnsmasq"}, "args.reload: expected list"),
        ({"reload": []}, "argv list"),
        ({"format": "rpz", "output": "OUT", "install": "block"}, "needs install 'file'"),
        ({"format": "unbound", "output": None}, "args.output: .* is required"),
        ({"format": "bind"}, "args.format: must be one of"),
        ({"shrink_guard": 2}, "between 0 and 1"),
        ({"lenient": 1}, "args.lenient: expected bool"),
        ({"http_retries": True}, "args.http_retries: expected int"),
        ({"redirect_ip": "blackhole"}, "not an IP address"),
        ({"sources": ["ftp://x/list"]}, "not an http"),
        ({"sources": ["https://a/x", "https://a/x"]}, "same URL twice"),
        ({"allow": ["/([/"]}, "bad regular expression"),
        ({"deny": ["/ads/"]}, "regular expressions cannot add names"),
        ({"allow": ["not a name"]}, "not a blockable domain name"),
        ({"allow_files": ["/nonexistent/allow.txt"]}, "rule file not found"),
        ({"sources": ["file://etc/hosts-list"]}, "file:///absolute/path"),
        ({"sources": ["https:///no-host"]}, "not an http"),
        ({"output": "hosts"}, "args.output: 'hosts' must be an absolute path"),
        ({"deny_files": ["deny.txt"]}, "args.deny_files: 'deny.txt' must be an absolute path"),
        ({"format": "dnsmasq", "output": "OUT", "redirect_ip": "::1"}, "not an IPv4 address"),
        ({"redirect_ipv6": "0.0.0.0"}, "not an IPv6 address"),
        ({"format": "domains", "output": "OUT", "sources": ["OUT"]}, "is the output file itself"),
    ],
)
def test_bad_args_are_refused_before_anything_runs(tmp_path: Path, args: dict, message: str) -> None:
    full = module_args(tmp_path, [write_source(tmp_path, ["a.example.com"])])
    out = str(tmp_path / "out")
    full.update({key: out if value == "OUT" else [out] if value == ["OUT"] else value for key, value in args.items()})
    (tmp_path / "hosts").write_bytes(USER_BEFORE)
    with pytest.raises(ArgsError, match=message) as raised:
        main(full)
    assert "\n" not in str(raised.value)  # one line
    assert (tmp_path / "hosts").read_bytes() == USER_BEFORE
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "state").iterdir()) == []


def test_whole_file_install_refuses_a_file_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "resolver.conf"
    theirs = b"# written by the administrator\nserver=9.9.9.9\n"
    out.write_bytes(theirs)
    args = module_args(tmp_path, [write_source(tmp_path, ["a.example.com"])], format="dnsmasq", output=str(out))
    with pytest.raises(ArgsError) as raised:
        main(args)
    message = str(raised.value)
    assert message == (
        f'args.install: "file" would replace {out}, which holds lines the adblock module did not write; '
        'use "install": "block" to manage only our block in it, or set "overwrite": true to replace the whole file'
    )
    assert out.read_bytes() == theirs
    assert list((tmp_path / "state").iterdir()) == []
    # Said explicitly: replaced. From then on the file is ours (it starts with our header): no key needed.
    assert main({**args, "overwrite": True})["changed"] is True
    assert out.read_text().endswith("\n\naddress=/a.example.com/#\n")
    assert main({**args, "sources": [write_source(tmp_path, ["a.example.com", "b.example.com"])]})["changed"]
    assert out.read_text().endswith("\naddress=/b.example.com/#\n")


def test_whole_file_install_onto_etc_hosts_needs_overwrite() -> None:
    # dry_run: even a broken check could not write /etc/hosts here.
    before = Path("/etc/hosts").read_bytes()
    args = {"name": "adblock", "dry_run": True, "state_dir": "/nonexistent/state", "install": "file",
            "sources": ["file:///nonexistent/list"]}
    with pytest.raises(ArgsError, match=r'^args.install: "file" would replace all of /etc/hosts, including its '
                                        r'localhost lines; .* "overwrite": true'):
        main(args)
    assert Path("/etc/hosts").read_bytes() == before


def test_deny_entries_as_hosts_lines(tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("# copied from a hosts file\n0.0.0.0 one.example.com\n127.0.0.1\ttwo.example.com three.example.com\n"
                    "::1 four.example.com # why\nfive.example.com six.example.com\n")
    args = module_args(tmp_path, [write_source(tmp_path, ["a.example.com"])], deny_files=[str(deny)],
                       deny=["0.0.0.0 seven.example.com"])
    main(args)
    assert block_names(tmp_path / "hosts") == sorted(
        ["a.example.com", "one.example.com", "two.example.com", "three.example.com", "four.example.com",
         "five.example.com", "six.example.com", "seven.example.com"]
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("0.0.0.0 printer.lan", "'printer.lan' is not a blockable domain name (a local or reserved name, "
                                "which is never blocked; remove the entry)"),
        ("0.0.0.0 bad..name.com", "'bad..name.com' is not a blockable domain name (not a valid host name; "
                                  "correct or remove the entry)"),
        ("0.0.0.0", "'0.0.0.0' is an address without a name; correct or remove the entry"),
    ],
)
def test_a_bad_deny_entry_is_one_line_naming_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text(f"ok.example.com\n\n{line}\n")
    hosts = tmp_path / "hosts"
    hosts.write_bytes(USER_BEFORE)
    with pytest.raises(ArgsError) as raised:
        main(module_args(tmp_path, [write_source(tmp_path, ["a.example.com"])], deny_files=[str(deny)]))
    assert str(raised.value) == f"{deny}:3: {problem}"
    assert hosts.read_bytes() == USER_BEFORE


def test_whole_file_refusal_for_a_format_without_block_mode_offers_only_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "zone.rpz"
    out.write_bytes(b"$TTL 60\n@ IN SOA ns. root. 1 1 1 1 1\n")
    args = module_args(tmp_path, [write_source(tmp_path, ["a.example.com"])], format="rpz", output=str(out))
    with pytest.raises(ArgsError) as raised:
        main(args)
    assert str(raised.value) == (
        f'args.install: "file" would replace {out}, which holds lines the adblock module did not write; '
        'set "overwrite": true to replace the whole file'
    )
