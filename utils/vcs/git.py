"""The git wrapper that tagging and rollback use.

Contract: every git call goes through `utils.proc.run` as an argument list (never a shell), with a timeout,
as `git -C <root> ...`, and with `GIT_TERMINAL_PROMPT=0` so that a push needing credentials fails instead
of waiting for a password nobody will type. A missing git binary raises `RollbackError`; any other failure
raises `CommandError` carrying git's last line. `read_tree` returns a tree's files without touching the work
tree, so a rollback never checks out anything beside the one module directory it replaces.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CommandError, RollbackError
from ..proc import run

DEFAULT_TIMEOUT = 30.0
PUSH_TIMEOUT = 120.0
# Tree entry modes git records for regular files; anything else (120000 symlink, 160000 submodule) is refused.
_FILE_MODES = {"100644": 0o644, "100755": 0o755, "100664": 0o644}


@dataclass(frozen=True)
class TreeFile:
    """One regular file of a committed tree: path relative to the tree, permission bits, content."""

    path: str
    mode: int
    data: bytes


@dataclass(frozen=True)
class Git:
    """`git -C root`, with an explicit executable, timeout and extra environment (tests pass PATH here)."""

    root: Path
    executable: str = "git"
    timeout: float = DEFAULT_TIMEOUT
    env: Mapping[str, str] = field(default_factory=dict)

    def run(
        self,
        *args: str,
        timeout: float | None = None,
        check: bool = True,
        input: bytes | None = None,  # noqa: A002 - mirrors subprocess.run
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        env = {**self.env, **(env or {}), "GIT_TERMINAL_PROMPT": "0"}
        try:
            result = run(
                [self.executable, "-C", os.fspath(self.root), *args],
                timeout=self.timeout if timeout is None else timeout,
                env=env,
                check=False,
                input=input,
            )
        except CommandError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                raise RollbackError(
                    f"git is not installed or not on PATH ({self.executable})",
                    hint="install git (apt-get install git); tags and rollback need it",
                ) from exc
            raise
        if check and result.returncode != 0:
            lines = result.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"]
            reason = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1])
            raise CommandError(f"git {args[0] if args else ''}: exit code {result.returncode}: {reason}")
        return result

    def text(self, *args: str, timeout: float | None = None) -> str:
        """stdout of a successful call, decoded and stripped."""
        return self.run(*args, timeout=timeout).stdout.decode("utf-8", "replace").strip()

    def prefix(self) -> str:
        """The root's path inside its work tree (`""` at the top, `"sub/"` below); refuses outside one."""
        try:
            result = self.run("rev-parse", "--is-inside-work-tree", "--show-prefix", check=False)
        except CommandError as exc:
            raise RollbackError(f"{self.root}: cannot run git: {exc}") from exc
        lines = result.stdout.decode("utf-8", "replace").splitlines()
        if result.returncode != 0 or not lines or lines[0] != "true":
            detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = f" ({detail[-1]})" if detail else ""
            raise RollbackError(
                f"{self.root} is not a git work tree{reason}",
                hint="tags and rollback need the installation to be a git clone",
            )
        return lines[1] if len(lines) > 1 else ""

    def head(self) -> str:
        """The commit HEAD points at; refuses in a repository without commits."""
        result = self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        if result.returncode != 0:
            raise RollbackError(f"{self.root}: the repository has no commit yet")
        return result.stdout.decode("ascii").strip()

    def read_tree(self, commit: str, path: str) -> list[TreeFile]:
        """Every file below `path` in `commit`, read from the object store (the work tree is not touched).

        Refuses symlinks, submodules and unsafe names, and a `path` that is not a directory in `commit`.
        """
        spec = f"{commit}:{path}"
        kind = self.run("cat-file", "-t", spec, check=False)
        if kind.returncode != 0 or kind.stdout.strip() != b"tree":
            raise RollbackError(f"{commit[:12]} has no directory {path}/")
        listing = self.run("ls-tree", "-r", "-z", "--full-tree", spec).stdout
        entries: list[tuple[str, int, str]] = []
        for record in filter(None, listing.split(b"\0")):
            meta, _, raw_name = record.partition(b"\t")
            mode, kind_name, oid = meta.decode("ascii").split()
            name = raw_name.decode("utf-8", "surrogateescape")
            if mode == "120000":
                raise RollbackError(f"{path}/{name} is a symlink in {commit[:12]}; modules hold no links")
            if kind_name != "blob" or mode not in _FILE_MODES:
                raise RollbackError(f"{path}/{name} in {commit[:12]} is not a regular file (mode {mode})")
            parts = name.split("/")
            if any(p in ("", ".", "..", ".git") for p in parts) or "\n" in name:
                raise RollbackError(f"{path}/{name!r} in {commit[:12]} is not a safe file name")
            entries.append((name, _FILE_MODES[mode], oid))
        if not entries:
            return []
        batch = self.run("cat-file", "--batch", input=b"".join(f"{oid}\n".encode() for _, _, oid in entries))
        blobs = _blobs(batch.stdout)
        return [TreeFile(name, mode, data) for (name, mode, _), data in zip(entries, blobs, strict=True)]


def _blobs(stream: bytes) -> list[bytes]:
    """Split `git cat-file --batch` output (`<oid> <type> <size>\\n<content>\\n` per object)."""
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        end = stream.index(b"\n", pos)
        header = stream[pos:end].split()
        if len(header) != 3 or header[1] != b"blob":
            raise CommandError(f"git cat-file: unexpected object header {stream[pos:end]!r}")
        size = int(header[2])
        out.append(stream[end + 1 : end + 1 + size])
        pos = end + 1 + size + 1
    return out
