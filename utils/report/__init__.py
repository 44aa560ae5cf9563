"""What a run leaves behind for the operator: history, metrics, notifications and the text they read.

Owns: `history` (the `history.jsonl` run log with rotation), `metrics` (the Prometheus textfile),
`notify` (webhook and healthchecks-style pings), `publish` (doing all three after a run without changing its
outcome) and `views` (summary lines, the JSON report, tables, the history and status cells).

May import: the shared helpers at the top of `utils/` only (module results come from `utils.results`).
"""
