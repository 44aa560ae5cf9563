"""Real SSH signing keys and real git repositories for the signed-code tests.

`keys` (session) makes ed25519 keys with ssh-keygen: alice and bob are allowed, eve is not. `signed`
gives each test a publisher repository (`upstream`, the rollback template with a commit signed by alice on
top) and a server's clone of it (`server`, remote `origin`), plus an allowed-signers file outside both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from git_support import MODULE, VERSIONS, Repo, index_py, noon

SSH_KEYGEN = shutil.which("ssh-keygen")


@dataclass(frozen=True)
class Keys:
    directory: Path

    def private(self, who: str) -> Path:
        return self.directory / who

    def line(self, who: str) -> str:
        public = (self.directory / f"{who}.pub").read_text().split()
        return f'{who}@example.org namespaces="git" {public[0]} {public[1]}\n'


@pytest.fixture(scope="session", name="keys")
def keys_fixture(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if SSH_KEYGEN is None:
        pytest.skip("ssh-keygen is not installed (apt-get install openssh-client)")
    directory = tmp_path_factory.mktemp("keys")
    for who in ("alice", "bob", "eve"):
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(directory / who)],
            check=True, timeout=30, capture_output=True,
        )  # fmt: skip
    return Keys(directory)


@dataclass
class Signed:
    upstream: Repo
    server: Repo
    signers: Path
    keys: Keys

    def commit(self, message: str, *, signer: str | None = "alice", version: str | None = None) -> str:
        """Commit on the publisher's side (a new demo version when `version`), signed by `signer`."""
        if version is not None:
            write_version(self.upstream, version)
        self.upstream.git("add", "-A")
        sign = ["-S"] if signer else []
        self.upstream.git(*sign_args(self.keys, signer), "commit", *sign, "-q", "--allow-empty", "-m", message)
        return self.upstream.git("rev-parse", "HEAD")

    def tag(self, name: str, *, signer: str | None = "alice", rev: str = "HEAD") -> None:
        if signer is None:
            self.upstream.git("tag", "-a", "-m", name, name, rev)
        else:
            self.upstream.git(*sign_args(self.keys, signer), "tag", "-s", "-m", name, name, rev)

    def allow(self, *who: str) -> None:
        self.signers.write_text("".join(self.keys.line(w) for w in who))

    def env(self) -> dict[str, str]:
        return {**os.environ, "UPDATES_ALLOWED_SIGNERS": str(self.signers),
                "UPDATES_STATE_DIR": str(self.server.root / "state")}  # fmt: skip


def sign_args(keys: Keys, signer: str | None) -> list[str]:
    if signer is None:
        return ["-c", "commit.gpgSign=false"]
    return ["-c", "gpg.format=ssh", "-c", f"user.signingKey={keys.private(signer)}"]


def write_version(repo: Repo, version: str) -> str:
    """Make demo/ a new version (derived from 2.0.0-rc.1) with a correct checksum; returns the digest."""
    VERSIONS.setdefault(version, {**VERSIONS["2.0.0-rc.1"], "index.py": index_py(version)})
    digest = repo.write_module(version)
    repo.set_entry(version=version, checksum=digest)
    return digest


@pytest.fixture(name="signed")
def signed_fixture(rollback_template: Repo, keys: Keys, tmp_path: Path) -> Signed:
    upstream = Repo(tmp_path / "upstream")
    shutil.copytree(rollback_template.root, upstream.root, symlinks=True)
    upstream.git(*sign_args(keys, "alice"), "commit", "-S", "-q", "--allow-empty", "-m", "signed release",
                 date=noon((2026, 3, 12)))  # fmt: skip
    server = Repo(tmp_path / "server" / "updates")
    server.root.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(upstream.root), str(server.root)], check=True, timeout=60)
    for key, value in (("user.name", "Server"), ("user.email", "root@server.invalid")):
        server.git("config", key, value)
    etc = tmp_path / "etc-updates"
    etc.mkdir(mode=0o755)
    result = Signed(upstream, server, etc / "allowed_signers", keys)
    result.allow("alice", "bob")
    return result


__all__ = ["MODULE", "Keys", "Signed", "keys_fixture", "sign_args", "signed_fixture", "write_version"]
