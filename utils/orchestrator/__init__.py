"""The orchestrator: the `index.py` command line and running the manifest's modules.

Owns: `cli` (parsing, dispatch, the one mapping of errors to exit codes), `command_run` (the `run` command:
lock, root's permission checks, the runner, the summary, publishing), `command_inspect` (the read-only
`status`, `verify` and `history`), `runner` (selection, checksum verification, isolation, results,
`run_children`), `loader` (importing a module from verified source only), `isolation` (the boundary around
one module call) and `script` (legacy shell-script entries).

May import: the shared helpers at the top of `utils/`, `utils.report`, and `utils.vcs` (for `pull` and
the signed-code gate of `run`, in `command_pull`). Never `utils.release` (it serves the modules), and
never an update module.
"""
