"""Running the manifest's modules: selection, verification, isolation, results.

Contract:
- `Runner(paths, manifest, options).run()` walks the entrypoint's children in manifest order and returns one
  `ModuleResult` per module it considered. A module runs only after its directory matches its `checksum`
  file (and the manifest's `checksum` when set); it is imported from source and its `main(args)` is called
  inside the isolation boundary and its `timeout`. Any exception, SystemExit included, makes it `failed`;
  the run goes on with the next module. Ctrl-C stops the run after recording the module it interrupted.
- Groups run their children. A module with children runs them itself through `run_children(args)`, which
  gives each child the same treatment; the runner warns when a module returns without having done so.
  The children of a disabled or `--skip`ped module or group are reported `skipped` with the reason.
- Summaries and errors are made printable (a lone surrogate becomes its escape), so that the summary, the
  log and the history can always be written.
- `on_success(name)` is called after each module that did not fail (not in dry-run), to record `lastApplied`.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..deadline import deadline
from ..digest import FolderDigest, digest_folder, read_checksum_file
from ..errors import ChecksumError, ModuleLoadError, ModuleTimeout, UnsafePermissions, UpdatesError
from ..manifest import Entry, Manifest
from ..paths import PACKAGE_ROOT, Paths
from ..permissions import FIX_HINT, check_ancestors, check_file, check_install, check_tree
from ..report.views import printable
from ..results import ModuleResult, Status
from .bytecode import BytecodeCache
from .isolation import isolated
from .loader import load_main
from .script import run_script

log = logging.getLogger(__name__)

_ACTIVE: contextvars.ContextVar[Runner] = contextvars.ContextVar("updates_runner")
CHECKSUMMER_HINT = "if the change is yours, review it and run `venv/bin/python utils/checksummer.py`"
# Marks the log records of a module's failure: the summary on stdout says the same, so the terminal
# handler leaves them out when a summary follows (log.setup_logging's `summary_follows`).
IN_SUMMARY = {"in_summary": True}


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    only: frozenset[str] | None = None
    skip: frozenset[str] = frozenset()
    quiet_stdout: bool = False  # keep module prints off stdout (it carries the JSON report)
    check_permissions: bool = False  # StrictModes-like refusal of code other users can change (root runs)


@dataclass
class Selection:
    """Which modules a run considers, from --only/--skip, expanded through groups and children."""

    only: frozenset[str] | None
    skip: frozenset[str]

    @classmethod
    def build(cls, manifest: Manifest, options: RunOptions) -> Selection:
        def expand(names: Iterable[str]) -> frozenset[str]:
            out: set[str] = set()
            for name in names:
                out.add(name)
                out.update(manifest.descendants(name))
            return frozenset(out)

        only = expand(options.only) if options.only is not None else None
        return cls(only=only, skip=expand(options.skip))


def verify_module(paths: Paths, entry: Entry) -> FolderDigest:
    """The module's live digest (with each file's hash, so that the loader compiles exactly the bytes
    that were checked), after checking it against the checksum file and the manifest."""
    directory = paths.module_dir(entry.name)
    verified = digest_folder(directory)
    live = verified.digest
    recorded = read_checksum_file(directory)
    if recorded is None:
        raise ChecksumError(
            f"{entry.name}: no checksum file in {entry.name}/ (live digest {live})",
            hint="run `python utils/checksummer.py` after reviewing the module",
        )
    if recorded != live:
        raise ChecksumError(
            f"{entry.name}: checksum mismatch: expected {recorded} (checksum file), got {live}",
            hint=CHECKSUMMER_HINT,
        )
    if entry.checksum is not None and entry.checksum != live:
        raise ChecksumError(
            f"{entry.name}: checksum mismatch: expected {entry.checksum} (manifest), got {live}",
            hint=CHECKSUMMER_HINT,
        )
    return verified


def permission_problem(paths: Paths, entry: Entry) -> str | None:
    """Why root must not run this module's code (None when it is safe to)."""
    if entry.script:
        problems = check_file(paths.root / entry.script)
    else:
        problems = check_tree(paths.module_dir(entry.name))
    if not problems:
        return None
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{entry.name}: refusing to run: {problems[0]}{more}"


def install_problems(paths: Paths) -> list[str]:
    """What makes the installation unsafe for root to run: our own code, the manifest, their directories."""
    problems = check_install(PACKAGE_ROOT, paths.manifest)
    if paths.root != PACKAGE_ROOT:
        problems += [p for p in check_ancestors(paths.root) if p not in problems]
    return problems


def classify(returned: object) -> tuple[Status, str | None]:
    """Status and summary from what a module's main returned."""
    if isinstance(returned, dict):
        summary = returned.get("summary")
        status = Status.CHANGED if returned.get("changed") else Status.OK
        return status, (printable(str(summary)) if summary is not None else None)
    if returned is not None:
        log.warning("main returned %s; expected None or a dict, treating it as ok", type(returned).__name__)
    return Status.OK, None


def describe_failure(exc: BaseException, name: str | None = None) -> str:
    """One printable line saying why module `name` failed, without repeating its name (the summary line
    and the log record both start with it)."""
    return printable(without_name(_failure_text(exc), name))


def without_name(text: str, name: str | None) -> str:
    """`text` without a leading `<name>: `, which errors raised for a module often carry."""
    while name and text.startswith(f"{name}: "):
        text = text[len(name) + 2 :]
    return text


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, ModuleTimeout):
        return str(exc)
    if isinstance(exc, SystemExit):
        return f"exited with code {exc.code}" if not isinstance(exc.code, str) else f"exited: {exc.code}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, UpdatesError):
        # The hint is the part that tells the administrator what to do: it belongs in the one line.
        return f"{exc}; hint: {exc.hint}" if exc.hint else str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Runner:
    def __init__(
        self,
        paths: Paths,
        manifest: Manifest,
        options: RunOptions,
        on_success: Callable[[str], None] | None = None,
    ) -> None:
        self.paths = paths
        self.manifest = manifest
        self.options = options
        self.on_success = on_success
        # Code compiled from verified module source, kept for later runs (nothing written on a dry run).
        self.bytecode = BytecodeCache(paths.bytecode, write=not options.dry_run)
        self.selection = Selection.build(manifest, options)
        self.results: list[ModuleResult] = []
        self.interrupted = False
        self._pid = os.getpid()
        self._considered: set[str] = set()
        self._children_ran: set[str] = set()

    # -- walking ---------------------------------------------------------------------------------------
    def run(self) -> list[ModuleResult]:
        token = _ACTIVE.set(self)
        try:
            self._visit(self.manifest.entrypoint, disabled_by=None)
            # Entries named with --only that the entrypoint does not reach still run: asked for by name.
            for name in self.options.only or ():
                self._visit(name, disabled_by=None)
        except KeyboardInterrupt:
            self.interrupted = True
            for name in self.planned():
                if name not in self._considered:
                    self._considered.add(name)
                    self.results.append(ModuleResult(name, Status.SKIPPED, summary="not run: interrupted"))
        finally:
            _ACTIVE.reset(token)
        return self.results

    def planned(self) -> list[str]:
        """The modules this run would consider, in order (children after the module that runs them)."""
        order: list[str] = []

        def walk(name: str) -> None:
            entry = self.manifest.entries[name]
            if not entry.is_group and (self.selection.only is None or name in self.selection.only):
                if name in order:
                    return
                order.append(name)
            for child in entry.children or ():
                walk(child)

        walk(self.manifest.entrypoint)
        for name in self.options.only or ():
            walk(name)
        return order

    def _visit(self, name: str, disabled_by: str | None) -> None:
        entry = self.manifest.entries[name]
        if not entry.enabled and disabled_by is None:
            disabled_by = name
        if entry.is_group:
            for child in entry.children or ():
                self._visit(child, disabled_by)
        elif self.selection.only is None or name in self.selection.only:
            self._run_module(entry, disabled_by)
        else:
            for child in entry.children or ():
                self._visit(child, disabled_by)

    def children_of(self, name: str) -> list[ModuleResult]:
        """Run the children of module `name` (for `run_children`) and return their results."""
        self._children_ran.add(name)
        start = len(self.results)
        entry = self.manifest.entries[name]
        for child in entry.children or ():
            self._visit(child, None if entry.enabled else name)
        return self.results[start:]

    # -- one module ------------------------------------------------------------------------------------
    def _skip(self, entry: Entry, reason: str, disabled_by: str | None) -> None:
        log.info("%s: skipped (%s)", entry.name, reason)
        self.results.append(ModuleResult(entry.name, Status.SKIPPED, summary=reason))
        # Its children would have run only through it: list them as skipped too, as a group's are. Those
        # of a --skip'ped module are in the expanded skip set and say `--skip`; those of a disabled one
        # name it.
        for child in entry.children or ():
            self._visit(child, disabled_by)

    def _run_module(self, entry: Entry, disabled_by: str | None) -> None:
        if entry.name in self._considered:
            return  # reachable through two parents: once per run is enough
        self._considered.add(entry.name)
        if entry.name in self.selection.skip:
            self._skip(entry, "--skip", disabled_by)
            return
        if disabled_by is not None:
            reason = "disabled" if disabled_by == entry.name else f"{disabled_by} is disabled"
            self._skip(entry, reason, disabled_by)
            return
        result = self._call(entry)
        if entry.children and entry.name not in self._children_ran and result.status != Status.FAILED:
            log.warning(
                "%s: main returned without running its children (%s); call run_children(args)",
                entry.name,
                ", ".join(entry.children),
            )
        for child in entry.children or ():
            if child not in self._considered and self.manifest.entries[child].is_group is False:
                self._considered.add(child)
                reason = "not reached" if entry.name in self._children_ran else "not run"
                self.results.append(ModuleResult(child, Status.SKIPPED, summary=f"{reason} by {entry.name}"))

    def _call(self, entry: Entry) -> ModuleResult:
        started = time.monotonic()
        limit = None
        result = ModuleResult(entry.name, Status.FAILED)
        # Appended before the call so that children run through run_children() are listed after it.
        self.results.append(result)
        log.info("%s: starting", entry.name)
        try:
            if self.options.check_permissions and (problem := permission_problem(self.paths, entry)):
                raise UnsafePermissions(problem, hint=FIX_HINT)
            state_dir = self.paths.module_state(entry.name)
            if entry.script:
                self._call_script(entry, result, state_dir)
                return result
            verified = verify_module(self.paths, entry)
            state_dir.mkdir(parents=True, exist_ok=True)
            args = {
                **entry.args,
                "name": entry.name,
                "dry_run": self.options.dry_run,
                "state_dir": str(state_dir),
            }
            threads_before = set(threading.enumerate())
            with isolated(stdout_to_stderr=self.options.quiet_stdout), deadline(entry.timeout) as limit:
                main = load_main(entry.name, self.paths.module_dir(entry.name), verified, cache=self.bytecode)
                returned = main(args)
            if limit is not None and limit.expired:  # it swallowed the timeout and returned anyway
                raise ModuleTimeout(limit.seconds, owner=limit)
            if inspect.iscoroutine(returned):
                returned.close()
                raise ModuleLoadError(
                    f"{entry.name}: main is a coroutine function; it must be a plain function"
                )
            result.status, result.summary = classify(returned)
            _warn_stray_threads(entry.name, threads_before)
        except KeyboardInterrupt:
            result.error = "interrupted"
            log.error("%s: interrupted", entry.name)
            raise
        except ModuleTimeout as exc:
            result.error = str(exc)
            if exc.owner is not limit:  # an enclosing module's deadline: it must reach that module
                result.error = f"stopped: the parent module {exc}"
                log.error("%s: %s", entry.name, result.error, extra=IN_SUMMARY)
                raise
            log.error("%s: failed: %s", entry.name, result.error, exc_info=True, extra=IN_SUMMARY)
        except (ChecksumError, ModuleLoadError, UnsafePermissions) as exc:
            result.error = describe_failure(exc, entry.name)
            log.error("%s: not run: %s", entry.name, result.error, exc_info=exc.__cause__ is not None,
                      extra=IN_SUMMARY)  # fmt: skip
        except BaseException as exc:
            result.error = describe_failure(exc, entry.name)
            log.error("%s: failed: %s", entry.name, result.error, exc_info=True, extra=IN_SUMMARY)
        finally:
            if os.getpid() != self._pid:
                # A module forked and its child returned here: it must not carry on our run.
                os._exit(0 if result.status != Status.FAILED else 1)
            result.duration_s = round(time.monotonic() - started, 3)
            self._succeeded(entry, result)
        return result

    def _succeeded(self, entry: Entry, result: ModuleResult) -> None:
        if result.status != Status.FAILED:
            log.info("%s: %s%s", entry.name, result.status, f" ({result.summary})" if result.summary else "")
            if self.on_success and not self.options.dry_run:
                try:
                    self.on_success(entry.name)
                except Exception as exc:  # whatever it is, the run's summary and history must follow
                    log.error("%s: could not record lastApplied: %s", entry.name, exc, exc_info=True)

    def _call_script(self, entry: Entry, result: ModuleResult, state_dir: Path) -> None:
        assert entry.script is not None
        state_dir.mkdir(parents=True, exist_ok=True)
        # run_script enforces the timeout itself, ending the script's whole process group.
        status, text = run_script(
            self.paths.root,
            entry.script,
            timeout=entry.timeout,
            dry_run=self.options.dry_run,
            log=logging.getLogger("updates.script"),
            name=entry.name,
            state_dir=state_dir,
            honours_dry_run=entry.dry_run_aware,
            expected_checksum=entry.checksum,
        )
        result.status = status
        text = printable(without_name(text, entry.script)) if text is not None else None
        if status == Status.FAILED:
            result.error = text
            log.error("%s: failed: %s", entry.name, text, extra=IN_SUMMARY)
        else:
            result.summary = text


def _warn_stray_threads(name: str, before: set[threading.Thread]) -> None:
    """A non-daemon thread left running keeps the whole process alive after the summary."""
    stray = [t.name for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    if stray:
        log.warning(
            "%s: left %d thread(s) running (%s); the run cannot end before they do",
            name,
            len(stray),
            ", ".join(stray),
        )


def run_children(args: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the children of the calling module with the orchestrator's checks and isolation.

    Returns one dict per child (`name`, `status`, `duration_s`, `summary`, `error`). A failing child is
    reported like any module and makes the run's exit code 1; it does not raise here.
    """
    runner = _ACTIVE.get(None)
    if runner is None:
        raise UpdatesError("run_children() works only inside a module run by the orchestrator")
    name = args.get("name")
    if name not in runner.manifest.entries:
        raise UpdatesError(f"run_children(): args carry no known module name ({name!r})")
    return [r.as_dict() for r in runner.children_of(name)]
