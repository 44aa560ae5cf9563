"""Keeping a tool current from its GitHub releases: the pipeline atuin, filebrowser and gogs share.

Owns, in pipeline order: `args` (the args every release module takes), `github` (the API client with its
conditional-request cache), `version` (release versions and their order), `assets` (which asset fits this
machine), `download` (streamed, size-checked and digest-verified), `extract` (safe tar.gz extraction),
`binary` (installing one binary atomically with backup, health check and automatic undo), `appdir`
(installing a whole application directory, gogs' way), `service` (service control and health polling), and
`update` (the flow that strings these together for a module's `main`).

May import: the shared helpers at the top of `utils/` only. Nothing here knows the orchestrator, rollback or
reporting; update modules import from here, never the other way round.
"""
