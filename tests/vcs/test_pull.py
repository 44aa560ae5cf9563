"""`pull`: the checkout moves only to a signed, sealed fast-forward; every refusal leaves it byte for byte.

Real git repositories (a publisher's and a server's clone), real ed25519 keys made by ssh-keygen, real
`git verify-commit`/`verify-tag` through ssh-keygen.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from git_support import MODULE, Repo, repo_fixture, rollback_template_fixture, snapshot  # noqa: F401
from signing_support import Signed, keys_fixture, signed_fixture, write_version  # noqa: F401
from updates.utils.vcs.git import Git
from updates.utils.vcs.pull import PullRefused, merge_manifest, pull
from updates.utils.vcs.signing import (
    UntrustedCode,
    commit_signature,
    head_signature,
    load_signers,
    signed_tree_problems,
)


def tree(repo: Repo) -> dict[str, tuple[bytes, int]]:
    """The checkout's files (git metadata and the state directory left out)."""
    return {k: v for k, v in snapshot(repo.root).items() if not k.startswith((".git/", "state/"))}


def do_pull(s: Signed, **kwargs: object):  # type: ignore[no-untyped-def]
    signers = load_signers(s.server.root, environ={"UPDATES_ALLOWED_SIGNERS": str(s.signers)})
    assert signers is not None
    return pull(s.server.paths, Git(s.server.root), signers, **kwargs)  # type: ignore[arg-type]


def refused(s: Signed, match: str, **kwargs: object) -> None:
    before, head = tree(s.server), s.server.git("rev-parse", "HEAD")
    with pytest.raises(PullRefused, match=match):
        do_pull(s, **kwargs)
    assert s.server.git("rev-parse", "HEAD") == head
    assert tree(s.server) == before


def test_a_signed_fast_forward_moves_and_keeps_the_hosts_settings(signed: Signed) -> None:
    signed.server.set_entry(args={"mirror": "local"}, enabled=False, lastApplied="2026-11-30T02:00:00Z")
    new = signed.commit("demo 2.0.0", version="2.0.0")
    result = do_pull(signed)
    assert result.moved and result.new == new and result.signature.principal == "alice@example.org"
    assert signed.server.git("rev-parse", "HEAD") == new
    entry = signed.server.entry()
    assert (entry["version"], entry["args"], entry["enabled"]) == ("2.0.0", {"mirror": "local"}, False)
    assert entry["lastApplied"] == "2026-11-30T02:00:00Z"
    assert entry["checksum"] == signed.upstream.entry()["checksum"]
    assert (signed.server.module_dir / "index.py").read_bytes() == (
        signed.upstream.module_dir / "index.py"
    ).read_bytes()
    # Only the host fields differ from the signed commit.
    assert signed.server.git("status", "--porcelain") == "M manifest.json"
    assert list((signed.server.paths.state / "journal").iterdir()) == []
    again = do_pull(signed)
    assert not again.moved and "already at" in again.line()


def test_a_signed_tag_is_enough_when_the_commit_is_not(signed: Signed) -> None:
    new = signed.commit("demo 2.0.0", version="2.0.0", signer=None)
    signed.tag("release-2.0.0", signer="bob")
    result = do_pull(signed, ref="release-2.0.0")
    assert result.new == new and result.signature.principal == "bob@example.org"
    # The nightly gate accepts what pull accepted: HEAD is unsigned, the tag pull deployed is signed.
    signers = load_signers(signed.server.root, environ={"UPDATES_ALLOWED_SIGNERS": str(signed.signers)})
    assert signers is not None
    assert head_signature(Git(signed.server.root), signers).principal == "bob@example.org"
    assert (
        signed_tree_problems(
            Git(signed.server.root), signers, signed.server.root, signed.server.paths.manifest
        )
        == []
    )
    # ... and only while that tag is what is checked out.
    signed.server.git("commit", "-q", "--allow-empty", "-m", "unsigned local commit")
    assert head_signature(Git(signed.server.root), signers).state == "unsigned"


def test_an_unsigned_commit_is_refused(signed: Signed) -> None:
    signed.commit("demo 2.0.0", version="2.0.0", signer=None)
    refused(signed, r"is not signed; not moving")


def test_a_key_that_is_not_allowed_is_refused(signed: Signed) -> None:
    signed.commit("demo 2.0.0", version="2.0.0", signer="eve")
    refused(signed, r"signed by a key that is not allowed \(SHA256:")


def test_a_removed_key_no_longer_counts(signed: Signed) -> None:
    signed.commit("demo 2.0.0", version="2.0.0", signer="bob")
    signed.allow("alice")
    refused(signed, r"signed by a key that is not allowed")


def test_a_tampered_signature_is_refused(signed: Signed) -> None:
    signed.commit("demo 2.0.0", version="2.0.0")
    # The same signed commit object with one word of its message changed: the signature no longer matches.
    raw = signed.upstream.git("cat-file", "commit", "HEAD").replace("demo 2.0.0", "demo 2.0.1")
    forged = subprocess.run(
        ["git", "-C", str(signed.upstream.root), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=raw.encode() + b"\n", capture_output=True, check=True, timeout=30,
    ).stdout.decode().strip()  # fmt: skip
    signed.upstream.git("update-ref", "refs/heads/main", forged)
    refused(signed, r"bad signature")


FAKE_GPG = """#!/bin/sh
# A checker that calls every OpenPGP signature good, as a hostile repository config could name one.
cat >/dev/null
echo "[GNUPG:] NEWSIG"
echo "[GNUPG:] GOODSIG 0123456789ABCDEF attacker"
echo "[GNUPG:] VALIDSIG 0123456789ABCDEF0123456789ABCDEF01234567 2026-01-01 0 4 0 1 8 00 0123456789ABCDEF0123456789ABCDEF01234567"
echo "[GNUPG:] TRUST_ULTIMATE 0 pgp"
exit 0
"""


def test_an_openpgp_signature_never_counts_whatever_the_repository_config_says(
    signed: Signed, tmp_path
) -> None:
    fake = tmp_path / "fake-gpg"
    fake.write_text(FAKE_GPG)
    fake.chmod(0o755)
    signed.upstream.git("config", "gpg.program", str(fake))
    raw = signed.upstream.git("cat-file", "commit", "HEAD")
    header = raw.partition("\n\n")[0]
    header = "\n".join(line for line in header.splitlines() if not line.startswith(("gpgsig", " ")))
    forged_sig = "gpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEE\n -----END PGP SIGNATURE-----"
    forged = subprocess.run(
        ["git", "-C", str(signed.upstream.root), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=f"{header}\n{forged_sig}\n\nforged release\n".encode(), capture_output=True, check=True, timeout=30,
    ).stdout.decode().strip()  # fmt: skip
    # Without the pinned checkers this repository's own config would call it good.
    plain = signed.upstream.git("log", "-1", "--format=%G?", forged)
    assert plain == "G"
    signers = load_signers(signed.server.root, environ={"UPDATES_ALLOWED_SIGNERS": str(signed.signers)})
    assert signers is not None
    assert not commit_signature(Git(signed.upstream.root), signers, forged).good
    signed.upstream.git("update-ref", "refs/heads/main", forged)
    signed.server.git("config", "gpg.program", str(fake))
    refused(signed, r"\(\w+\) is (bad signature|not signed|signed by a key that is not allowed)")


def test_an_older_signed_tag_is_a_downgrade(signed: Signed) -> None:
    signed.tag("old-release", rev="HEAD~1")
    signed.commit("demo 2.0.0", version="2.0.0")
    do_pull(signed)
    refused(signed, r"is older than the deployed", ref="old-release")


def test_a_force_pushed_history_is_refused_unless_allowed(signed: Signed) -> None:
    signed.commit("demo 2.0.0", version="2.0.0")
    do_pull(signed)
    signed.upstream.git("reset", "-q", "--hard", "HEAD~1")
    rewritten = signed.commit("demo 2.0.0, rewritten", version="2.0.1")
    refused(signed, r"is not a fast-forward of the deployed")
    result = do_pull(signed, allow_downgrade=True)
    assert result.moved and result.downgrade and signed.server.git("rev-parse", "HEAD") == rewritten


def test_a_signed_commit_with_a_stale_checksum_is_refused(signed: Signed) -> None:
    write_version(signed.upstream, "2.0.0")
    (signed.upstream.module_dir / "lib.py").write_text("VALUE = 'changed after sealing'\n")
    signed.commit("demo 2.0.0, stale seal")
    refused(signed, rf"is signed but {MODULE}: checksum mismatch")


def test_local_edits_are_never_overwritten(signed: Signed) -> None:
    signed.commit("demo 2.0.0", version="2.0.0")
    (signed.server.root / "utils" / "paths.py").write_text("# edited on the server\n")
    refused(signed, r"local changes would be overwritten: utils/paths.py differs")


def test_an_unreachable_remote_says_so(signed: Signed) -> None:
    signed.server.git("remote", "set-url", "origin", str(signed.server.root.parent / "gone"))
    refused(signed, r"cannot fetch refs/heads/main from origin")


def test_the_root_of_trust_is_refused_when_others_can_change_it(signed: Signed) -> None:
    signed.signers.chmod(0o666)
    with pytest.raises(UntrustedCode, match="refusing the allowed-signers file"):
        load_signers(signed.server.root, environ={"UPDATES_ALLOWED_SIGNERS": str(signed.signers)})
    signed.signers.chmod(0o644)
    inside = signed.server.root / "allowed_signers"
    inside.write_text(signed.keys.line("eve"))
    with pytest.raises(UntrustedCode, match="inside the checkout"):
        load_signers(signed.server.root, environ={"UPDATES_ALLOWED_SIGNERS": str(inside)})
    assert (
        load_signers(signed.server.root, environ={"UPDATES_ALLOWED_SIGNERS": str(signed.signers) + "x"})
        is None
    )


def test_a_failure_after_the_reset_puts_the_old_commit_back(signed: Signed) -> None:
    signed.server.set_entry(args={"keep": 1})
    signed.commit("demo 2.0.0", version="2.0.0")
    before, head = tree(signed.server), signed.server.git("rev-parse", "HEAD")

    def fail(step: str) -> None:
        if step == "moved":
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        do_pull(signed, on_step=fail)
    assert signed.server.git("rev-parse", "HEAD") == head and tree(signed.server) == before


def test_merge_keeps_host_fields_and_takes_code_fields() -> None:
    current = {"updates": [{"name": "a", "version": "1", "checksum": "x", "args": {"k": 1}, "enabled": False},
                           {"name": "gone", "version": "1"}],
               "entrypoint": "a", "notify": {"webhook": "h"}}  # fmt: skip
    target = {"updates": [{"name": "a", "version": "2", "checksum": "y", "args": {}, "timeout": 5},
                          {"name": "new", "version": "1", "enabled": False}], "entrypoint": "a"}  # fmt: skip
    merged = merge_manifest(current, target)
    assert merged["updates"] == [
        {"name": "a", "version": "2", "checksum": "y", "args": {"k": 1}, "timeout": 5, "enabled": False},
        {"name": "new", "version": "1", "enabled": False},
    ]
    assert merged["notify"] == {"webhook": "h"} and merged["entrypoint"] == "a"
    assert list(merged) == ["updates", "entrypoint", "notify"]
    assert json.loads(json.dumps(merged)) == merged
