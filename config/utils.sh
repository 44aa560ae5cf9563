# shellcheck shell=bash
# Shared shell helpers of `updates`: sourced by setup_venv.sh, config/install_units.sh and by legacy update
# scripts (which find this file through $UPDATES_UTILS). It only defines functions: it sets no shell option
# and runs nothing, and every function is safe under `set -euo pipefail`.
#
#   log_info MSG...     "info: MSG" on stderr (under systemd the journal adds the time)
#   log_warn MSG...     "warning: MSG" on stderr
#   log_error MSG...    "error: MSG" on stderr
#   die MSG...          log_error MSG, then exit 1
#   require_root [WHAT] die unless running as root
#   require_cmd CMD...  die naming the first CMD that is not on PATH
#   is_dry_run          true when the orchestrator runs with --dry-run (UPDATES_DRY_RUN=1): change nothing
#   report_changed MSG  tell the orchestrator this script changed something (status `changed`, summary MSG)
#   report_ok MSG       tell the orchestrator nothing changed, with a summary MSG

_updates_log() {
    local level=$1
    shift
    printf '%s: %s\n' "$level" "$*" >&2
}

log_info() { _updates_log info "$@"; }
log_warn() { _updates_log warning "$@"; }
log_error() { _updates_log error "$@"; }

die() {
    log_error "$@"
    exit 1
}

require_root() {
    if [ "${EUID:-$(id -u)}" -ne 0 ]; then
        die "${1:-this script} must run as root (try sudo)"
    fi
}

require_cmd() {
    local cmd
    for cmd in "$@"; do
        command -v -- "$cmd" >/dev/null 2>&1 || die "required command not found: $cmd"
    done
}

is_dry_run() {
    [ "${UPDATES_DRY_RUN:-0}" = "1" ]
}

# The orchestrator passes UPDATES_RESULT, a file it reads after the script exits: "<status>\t<summary>".
_updates_report() {
    if [ -n "${UPDATES_RESULT:-}" ]; then
        printf '%s\t%s\n' "$1" "$2" >"$UPDATES_RESULT"
    fi
}

report_changed() { _updates_report changed "$*"; }
report_ok() { _updates_report ok "$*"; }
