"""Module versions in git: the git wrapper, version tags, directory swaps, and the rollback operations.

Owns: `git` (the one git wrapper: argument lists, timeouts, no prompts), `tags` (the
`<name>-v<version>-<YYYYMMDD>` tag format), `treeswap` (writing a tagged tree and exchanging two
directories) and `operations` (tag, list, restore and mark safe: what `utils/rollback.py` exposes as the
Python API and the command line).

May import: the shared helpers at the top of `utils/` only.
"""
