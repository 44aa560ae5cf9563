"""Signed code on the command line: `index.py pull`, the gate in `run`, `verify`'s line, and rollback to
signed and unsigned tags, each as a real subprocess on a real clone with real ssh-keygen keys."""

from __future__ import annotations

import json
import subprocess
import sys

from git_support import MODULE, Repo, repo_fixture, rollback_template_fixture, snapshot  # noqa: F401
from signing_support import Signed, keys_fixture, sign_args, signed_fixture, write_version  # noqa: F401


def cli(s: Signed, *args: str, script: str = "index.py") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, script, *args], cwd=s.server.root, env=s.env(),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def ran(s: Signed) -> bool:
    return (s.server.root / "state" / "modules" / MODULE / "ran.txt").exists() or any(
        (s.server.root / "state").rglob("ran.txt")
    )


def tree(repo: Repo) -> dict[str, tuple[bytes, int]]:
    return {k: v for k, v in snapshot(repo.root).items() if not k.startswith((".git/", "state/"))}


def test_a_signed_checkout_runs_and_keeps_running_after_it_writes_its_host_fields(signed: Signed) -> None:
    signed.server.set_entry(args={"note": "host setting"})
    for _ in range(2):  # the first run writes lastApplied: the second must accept that host field
        done = cli(signed, "run", "--only", MODULE)
        assert done.returncode == 0, done.stderr
    assert ran(signed)
    verify = cli(signed, "verify")
    head = signed.server.git("rev-parse", "--short=12", "HEAD")
    assert f"signing: on; {head} signed by alice@example.org, code unchanged" in verify.stdout


def test_a_local_code_edit_stops_the_run(signed: Signed) -> None:
    with (signed.server.root / "utils" / "paths.py").open("a", encoding="utf-8") as edited:
        edited.write("# edited on the server\n")
    done = cli(signed, "run", "--only", MODULE)
    assert done.returncode == 2
    assert errors(done) == [
        "error: signing is on and the code differs from the signed commit: utils/paths.py differs; nothing runs"
    ]
    assert not ran(signed)
    verify = cli(signed, "verify")
    assert verify.returncode == 1 and "signing: signing is on and the code differs" in verify.stdout


def test_an_added_python_file_or_a_changed_code_field_stops_the_run(signed: Signed) -> None:
    planted = signed.server.root / "utils" / "sitecustomize.py"
    planted.write_text("import os\n", encoding="utf-8")
    done = cli(signed, "run", "--only", MODULE)
    assert done.returncode == 2 and "utils/sitecustomize.py is not in the signed commit" in done.stderr
    planted.unlink()
    signed.server.set_entry(version="9.9.9")
    done = cli(signed, "run", "--only", MODULE)
    assert done.returncode == 2 and "demo 9.9.9" in done.stderr and not ran(signed)


def test_an_unsigned_commit_on_the_server_stops_the_run(signed: Signed) -> None:
    signed.server.git("commit", "-q", "--allow-empty", "-m", "unsigned local commit")
    done = cli(signed, "run", "--only", MODULE)
    assert done.returncode == 2
    assert errors(done) == ["error: signing is on and the checked-out commit is not signed; nothing runs"]


def test_a_root_of_trust_others_can_write_stops_everything(signed: Signed) -> None:
    signed.signers.chmod(0o666)
    done = cli(signed, "run", "--only", MODULE)
    assert done.returncode == 2 and "refusing the allowed-signers file" in done.stderr and not ran(signed)


def test_without_the_file_signing_is_off_and_verify_says_so(signed: Signed) -> None:
    signed.signers.unlink()
    signed.server.git("commit", "-q", "--allow-empty", "-m", "unsigned local commit")
    assert cli(signed, "run", "--only", MODULE).returncode == 0
    assert f"signing: off (no allowed-signers file at {signed.signers}" in cli(signed, "verify").stdout
    done = cli(signed, "pull")
    assert done.returncode == 2 and "pull needs the allowed-signers file" in done.stderr


def test_pull_moves_records_and_refuses_on_the_command_line(signed: Signed) -> None:
    new = signed.commit("demo 2.0.0", version="2.0.0")
    done = cli(signed, "pull")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.startswith("moved from ")
        and f"to {new[:12]} (origin main, signed by alice" in done.stdout
    )
    assert cli(signed, "run", "--only", MODULE).returncode == 0
    unsigned = signed.commit("demo 2.0.1", version="2.0.1", signer=None)
    before = tree(signed.server)
    done = cli(signed, "pull", "--json")
    assert done.returncode == 1
    assert errors(done) == [f"error: origin main ({unsigned[:12]}) is not signed; not moving"]
    assert tree(signed.server) == before and signed.server.git("rev-parse", "HEAD") == new
    history = cli(signed, "history", "--json")
    records = json.loads(history.stdout)
    pulls = [
        r
        for r in (records if isinstance(records, list) else records.get("runs", []))
        if r.get("command") == "pull"
    ]
    assert len(pulls) == 2


def test_rollback_to_an_unsigned_tag_is_refused_under_signing_unless_forced(signed: Signed) -> None:
    rollback = "utils/rollback.py"
    done = cli(signed, "rollback", MODULE, "--to", "1.1.0", script=rollback)
    assert done.returncode == 1 and "is not signed; with signing on" in done.stderr
    commit = signed.server.git("rev-list", "-n1", "demo-v1.1.0-20260210")
    signed.server.git(
        *sign_args(signed.keys, "bob"), "tag", "-s", "-m", "signed", "demo-v1.1.0-20260301", commit
    )
    listing = json.loads(cli(signed, "list", MODULE, "--json", script=rollback).stdout)
    assert {(r["tag"], r["signed"], r["signer"]) for r in listing if r["version"] == "1.1.0"} == {
        ("demo-v1.1.0-20260301", True, "bob@example.org"),
        ("demo-v1.1.0-20260210", False, None),
    }
    done = cli(signed, "rollback", MODULE, "--to", "1.1.0", script=rollback)
    assert done.returncode == 0, done.stderr
    assert cli(signed, "run", "--only", MODULE).returncode == 0
    assert (signed.server.root / "state").exists() and ran(signed)


def test_tag_sign_makes_a_signed_tag(signed: Signed) -> None:
    for key, value in (("gpg.format", "ssh"), ("user.signingKey", str(signed.keys.private("alice")))):
        signed.server.git("config", key, value)
    done = cli(signed, "tag", MODULE, "--sign", script="utils/rollback.py")
    assert done.returncode == 0, done.stderr
    tag = done.stdout.strip().splitlines()[0]
    rows = json.loads(cli(signed, "list", MODULE, "--json", script="utils/rollback.py").stdout)
    assert next(r for r in rows if r["tag"] == tag)["signer"] == "alice@example.org"
    signed.server.git("config", "user.signingKey", str(signed.keys.directory / "missing"))
    done = cli(signed, "tag", MODULE, "--version", "7.0.0", "--sign", script="utils/rollback.py")
    assert done.returncode == 1 and "cannot sign the tag demo-v7.0.0-" in done.stderr
    # git itself made an unsigned tag and said nothing: it must not survive.
    assert signed.server.git("tag", "--list", "demo-v7.0.0-*") == ""
