"""Update module `adblock`: download blocklists, compile one list, install it where the resolver reads it.

Contract: `main(args)` fetches every source (conditional GET, cached last good copy as fallback), parses
and merges them with the allow/deny rules, renders the chosen format and installs it: the managed block of
/etc/hosts by default, or a whole file. It raises `UpdatesError` (nothing written) when no source gave a
list or when the new list is below the shrink guard, and when the reload command fails (the list is
written by then; the next run retries the reload even if nothing changed). Unchanged content means no
write, no reload and `{"changed": False}`; a run where every source answered "not modified" and nothing
else changed returns before parsing anything. Writing the list and the state that records it is one
journaled change (utils/journal.py): a kill between the two is reverted by the next command that takes
the run lock, so the next run installs and reloads again instead of taking the new file for installed.
Under `dry_run` nothing is written (not even the
cache) and the summary says what would change. Args are documented in README.md.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import operator
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.errors import UpdatesError
from ..utils.fsutil import atomic_write_text
from ..utils.journal import Operation, module_journal_dir, operation, restore_file, sweep, write_bytes
from ..utils.proc import run
from ..utils.progress import Progress
from . import LIVE_CHECKSUM
from .config import Options
from .install import check_whole_file, compose, read_current, write_file
from .lists import Rules, load_rules, merge
from .memory import retained_memory
from .parse import ParsedList, parse_list
from .render import Meta, body_of, names_in, render_pieces, separator
from .sources import FAILED, FRESH, NOT_MODIFIED, Cache, Fetched, fetch

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
_NOT_IN_OUTPUT = ("reload", "reload_timeout", "force")


@dataclass
class Gathered:
    """The lists that take part in this run, and how each source fared."""

    lists: list[tuple[str, ParsedList]]
    stale: list[str]
    skipped: list[str]


def _session(opts: Options) -> Any:
    from ..utils.http import make_session  # noqa: PLC0415 - file-only runs never import requests

    return make_session(retries=opts.http_retries, backoff=opts.http_backoff, timeout=opts.http_timeout)


def _fetch_all(opts: Options, cache: Cache) -> list[Fetched]:
    session = None
    results = []
    for source in opts.sources:
        if session is None and source.local_path is None:
            session = _session(opts)
        results.append(fetch(source, cache, session=session, max_bytes=opts.max_source_bytes))
    if session is not None:
        session.close()
    return results


def _gather(fetched: Sequence[Fetched], opts: Options, cache: Cache, dry_run: bool) -> Gathered:
    gathered = Gathered([], [], [])
    # A bar on a terminal only (utils/progress.py): parsing a list of a million lines takes seconds.
    with Progress("compiling blocklists", total=len(fetched), unit="lists") as bar:
        for item in fetched:
            _gather_one(item, opts, cache, dry_run, gathered)
            bar.update(1)
    return gathered


def _gather_one(item: Fetched, opts: Options, cache: Cache, dry_run: bool, gathered: Gathered) -> None:
    """Parse one fetched source (or its last good copy) into `gathered`."""
    source = item.source
    parsed = None
    if item.status == FRESH:
        assert item.body is not None
        size = len(item.body)
        stage = _Stage(cache, source.url, None if dry_run else item.body)
        # The parser holds the only other reference to the downloaded bytes: once they are staged in
        # the cache (by a thread, while the list is parsed), it can free them.
        parsed = parse_list(item.take_body(), lenient=opts.lenient, meanwhile=stage, sep=_separator(opts))
        staged = stage.digest
        previous = cache.meta(source.url).get("names", 0)
        too_small = parsed.stats.names < opts.min_source_fraction * previous and not opts.force
        if parsed.stats.names == 0 or too_small:
            item.status = FAILED
            item.reason = (
                f"implausibly small ({parsed.stats.names:,} names, the last good copy had {previous:,})"
                if parsed.stats.names else "no names in it"
            )
            parsed = None
            if staged:
                cache.discard(source.url, staged)
        elif staged:
            cache.commit(
                source.url, staged, size=size, names=parsed.stats.names, validators=item.validators
            )
    if parsed is None:
        item.body = cache.body(source.url)
        if item.body is None:
            reason = item.reason or "its cached copy is gone"
            log.warning("source %s skipped: %s, and there is no cached copy", source.url, reason)
            gathered.skipped.append(source.name)
            return
        if item.status == FAILED:
            log.warning("source %s: %s; using the last good copy", source.url, item.reason)
            gathered.stale.append(source.name)
        parsed = parse_list(item.take_body(), lenient=opts.lenient, sep=_separator(opts))
    stats = parsed.stats
    if stats.invalid or stats.unsupported:
        log.info(
            "source %s: %d invalid line(s), %d unsupported rule(s); e.g. %s",
            source.url, stats.invalid, stats.unsupported, "; ".join(stats.samples) or "-",
        )
    gathered.lists.append((source.name, parsed))


def _separator(opts: Options) -> str:
    """How the parse joins a list's names: as the body of the output (render.separator), so that a single
    source's names need nothing more to be rendered; rules and merges read them back all the same."""
    return separator(opts.format, opts.redirect_ip, opts.redirect_ipv6)


class _Stage:
    """Stage a new download in the cache when called (nothing under dry_run); `digest` names the copy."""

    def __init__(self, cache: Cache, url: str, body: bytes | None) -> None:
        self.cache, self.url, self.body = cache, url, body
        self.digest: str | None = None

    def __call__(self) -> None:
        body, self.body = self.body, None
        if body is not None:
            self.digest = self.cache.stage(self.url, body)


def _fingerprint(opts: Options, fetched: Sequence[Fetched], cache: Cache) -> str:
    """Digest of everything the output depends on, when every source is unchanged."""
    rule_files: list[str | None] = []
    for name in (*opts.allow_files, *opts.deny_files):
        try:
            rule_files.append(hashlib.sha256(Path(name).read_bytes()).hexdigest())
        except OSError:
            rule_files.append(None)
    parts = {
        "code": LIVE_CHECKSUM,  # new parsing or rendering code must not take the "nothing changed" shortcut
        "options": {k: str(v) for k, v in vars(opts).items() if k not in _NOT_IN_OUTPUT},
        "rule_files": rule_files,
        "sources": [cache.meta(item.source.url).get("sha256") for item in fetched],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _digest(data: bytes | bytearray | memoryview | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


class _Hashing:
    """The SHA-256 of `pieces` (one after the other, as `_digest` of their join would be) computed in a
    thread of its own, started at once: hashlib releases the GIL on large data, so a 30 MB list is hashed
    (about 15 ms) while the caller writes it. `result()` waits for it."""

    def __init__(self, pieces: Sequence[bytes | bytearray]) -> None:
        self._pieces: Sequence[bytes | bytearray] = pieces
        self._digest: str | None = None
        self._thread = threading.Thread(target=self._run, name="adblock-digest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        digest = hashlib.sha256()
        for piece in self._pieces:
            digest.update(piece)
        self._digest, self._pieces = digest.hexdigest(), ()

    def result(self) -> str | None:
        self._thread.join()
        return self._digest


def _epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value and value.isdigit():
        return int(value)
    return int(time.time())


def _rules(opts: Options) -> tuple[Rules, Rules]:
    allow = load_rules(opts.allow, opts.allow_files, "allow", allow_regex=True)
    deny = load_rules(opts.deny, opts.deny_files, "deny", allow_regex=False)
    return allow, deny


def main(args: Mapping[str, Any]) -> dict[str, Any] | None:
    with retained_memory():  # speed only: large buffers are reused instead of faulted in again (memory.py)
        return _main(args)


def _main(args: Mapping[str, Any]) -> dict[str, Any] | None:
    opts = Options.from_args(args)
    dry_run = bool(args.get("dry_run", False))
    state_dir = Path(args["state_dir"])
    cache = Cache(state_dir / "cache")
    state_path = state_dir / STATE_FILE
    allow, deny = _rules(opts)
    if not opts.block:
        check_whole_file(opts.output, opts.format, opts.overwrite)

    fetched = _fetch_all(opts, cache)
    current = read_current(opts.output, opts.block)  # damaged markers fail the run before any parsing
    state = _load_state(state_path)
    fingerprint = _fingerprint(opts, fetched, cache)
    if (
        all(item.status == NOT_MODIFIED for item in fetched)
        and state.get("fingerprint") == fingerprint
        and state.get("installed") == _digest(current.ours())
    ):
        summary = f"{state.get('count', 0):,} domains, all sources unchanged"
        return _unchanged(opts, state, state_path, summary, dry_run)
    del current  # read again once the lists are parsed: the parse helper process need not carry it

    gathered = _gather(fetched, opts, cache, dry_run)
    total = len(opts.sources)
    used = len(gathered.lists)
    if used == 0:
        raise UpdatesError(
            f"no source could be fetched and none has a cached copy (0/{total}); {opts.output} left as it was"
        )
    merged = merge(
        (parsed.names for _, parsed in gathered.lists),
        allow=allow, deny=deny, filter_subdomains=opts.filter_subdomains,
    )
    names = merged.names
    where = f"from {used}/{total} sources"
    if gathered.stale:
        where += f" ({len(gathered.stale)} from cache: {', '.join(gathered.stale)})"
    if gathered.skipped:
        where += f" (skipped: {', '.join(gathered.skipped)})"

    meta = Meta([(name, parsed.stats.names) for name, parsed in gathered.lists], _epoch())
    del gathered  # with several sources, their own lists are no longer needed
    current = read_current(opts.output, opts.block)
    old_body = current.body()
    # Counted before rendering, so that the set of names and the new text are never in memory together.
    old_count, removed = _compare(old_body, names, opts.format)
    count = len(names)
    # In pieces (the sorted names' blocks among them): joined once, into the file's content.
    ours = render_pieces(names, opts.format, meta, redirect_ip=opts.redirect_ip,
                         redirect_ipv6=opts.redirect_ipv6, exceptions=merged.exceptions)
    del names, merged  # what is left to do needs only the rendered bytes
    if removed == 0 and old_count == count and old_body == body_of(b"".join(ours)):
        if not dry_run:
            state = _save_state(
                state_path, _fingerprint(opts, fetched, cache), _digest(current.ours()), count,
                reload_pending=bool(state.get("reload_pending")),
            )
        return _unchanged(opts, state, state_path, f"{count:,} domains {where}, unchanged", dry_run)
    del old_body

    added = count - (old_count - removed)
    change = f"+{added:,} -{removed:,} = {count:,} domains {where}"
    if old_count and count < opts.shrink_guard * old_count and not opts.force:
        raise UpdatesError(
            f"refusing to shrink the blocklist from {old_count:,} to {count:,} domains "
            f"(below the shrink guard {opts.shrink_guard:g}); {opts.output} left as it was",
            hint="check the sources; set args.force to true for one run to accept it",
        )
    if dry_run:
        return {"changed": False, "summary": f"dry run: would write {change} to {opts.output}"}

    digest = _Hashing(ours)  # the state records it; hashed in a thread while the file is written
    try:
        content = compose(current, ours, opts.block)
        with operation(
            module_journal_dir(state_dir), "adblock-install", module=str(args.get("name", "adblock")),
            describe=f"blocklist install to {opts.output} ({change})",
        ) as record:  # fmt: skip
            _will_undo_install(record, opts.output, current.full, state_dir, state_path)
            how = write_file(opts.output, content, current.full, state_dir / "backups")
            # Recorded before the reload: a reload that fails (or is killed) is retried by the next run,
            # even when the list has not changed again by then.
            state = _save_state(state_path, _fingerprint(opts, fetched, cache), digest.result(), count,
                                reload_pending=bool(opts.reload))
            record.commit()
    finally:
        digest.result()  # no thread of ours outlives the module
    log.info("wrote %s (%s): %s", opts.output, how, change)
    if opts.reload:
        try:
            _reload(opts, state, state_path)
        except UpdatesError as exc:
            raise UpdatesError(f"blocklist written ({change}) but the reload command failed: {exc}") from exc
    return {"changed": True, "summary": change}


def _will_undo_install(
    record: Operation, output: Path, previous: bytes | None, state_dir: Path, state_path: Path
) -> None:
    """Journal how to put the list file and our state back: a kill between writing the list and the state
    would otherwise leave a new list that the next run takes for installed and never reloads."""
    target = Path(os.path.realpath(output))
    old = hashlib.sha256(previous).hexdigest() if previous is not None else None
    try:
        saved: bytes | None = state_path.read_bytes()
    except FileNotFoundError:
        saved = None
    record.will_undo(
        # write_file keeps the previous file as this backup before it replaces it.
        restore_file(target, old, state_dir / "backups" / f"{output.name}.bak"),
        write_bytes(state_path, saved),
        sweep(target.parent, f".{target.name}."),
        sweep(state_path.parent, f".{state_path.name}."),
    )


def _reload(opts: Options, state: dict[str, Any], state_path: Path) -> None:
    """Run the reload command (callers check there is one); once it succeeds, no reload is owed."""
    run(list(opts.reload or ()), timeout=opts.reload_timeout)
    _write_state(state_path, {**state, "reload_pending": False})


def _unchanged(
    opts: Options, state: dict[str, Any], state_path: Path, summary: str, dry_run: bool
) -> dict[str, Any]:
    """The result of a run that installs nothing new; it runs a reload that failed last time."""
    if not (opts.reload and state.get("reload_pending")):
        return {"changed": False, "summary": summary}
    if dry_run:
        return {"changed": False, "summary": f"{summary}; would retry the reload that failed last time"}
    try:
        _reload(opts, state, state_path)
    except UpdatesError as exc:
        raise UpdatesError(f"{summary}, but the reload command failed again: {exc}") from exc
    log.info("the reload that failed last time succeeded")
    return {"changed": True, "summary": f"{summary}; reloaded (the last reload had failed)"}


def _compare(old_body: memoryview | None, names: Sequence[str], fmt: str) -> tuple[int, int]:
    """(names installed now, how many of them the new list drops), without a set of the old names."""
    if not old_body:
        return 0, 0
    # One 0/1 byte per old name; groupby folds the IPv6 twin line of a hosts entry into its IPv4 line.
    old = map(operator.itemgetter(0), itertools.groupby(names_in(old_body, fmt)))
    kept = bytes(map(set(names).__contains__, old))
    return len(kept), kept.count(0)


def _save_state(
    path: Path,
    fingerprint: str,
    installed: str | None,
    count: int,
    *,
    reload_pending: bool = False,
) -> dict[str, Any]:
    """`installed`: the SHA-256 of what is installed (`_digest`)."""
    state = {
        "fingerprint": fingerprint,
        "installed": installed,
        "count": count,
        "reload_pending": reload_pending,
    }
    _write_state(path, state)
    return state


def _write_state(path: Path, state: dict[str, Any]) -> None:
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    atomic_write_text(path, text, mode=0o600, follow_symlinks=False)
