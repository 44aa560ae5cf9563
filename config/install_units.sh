#!/usr/bin/env bash
# Install the systemd units of `updates` (updates.service, updates.timer) for this installation, reload
# systemd and enable the daily timer; `--uninstall` undoes it. Idempotent: a second run changes nothing
# and reloads nothing. Run as root: `sudo config/install_units.sh`. See --help.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=config/utils.sh
. "$here/utils.sh"

DEFAULT_DEST=/etc/systemd/system
UNITS=(updates.service updates.timer)

usage() {
    cat <<EOF
usage: $0 [--uninstall] [--no-enable] [--no-systemctl] [--root DIR] [--python PATH] [--dest DIR]
          [--systemctl CMD]

Writes updates.service and updates.timer for this installation into DIR (default $DEFAULT_DEST),
runs 'systemctl daemon-reload' when a unit changed and 'systemctl enable --now updates.timer'.

  --uninstall      disable and stop the timer, remove both units, reload systemd
  --no-enable      install the units but do not enable or start the timer
  --no-systemctl   write or remove the units only; never call systemctl
  --root DIR       the installation directory (default: the parent of this script's directory)
  --python PATH    the interpreter to run (default: ROOT/venv/bin/python, made by setup_venv.sh)
  --dest DIR       where the units go (env UPDATES_UNIT_DIR; default $DEFAULT_DEST)
  --systemctl CMD  the systemctl program to call (env UPDATES_SYSTEMCTL; default systemctl)
EOF
}

root=$(cd -- "$here/.." && pwd -P)
python=""
dest=${UPDATES_UNIT_DIR:-$DEFAULT_DEST}
systemctl_cmd=${UPDATES_SYSTEMCTL:-systemctl}
action=install
enable=1
call_systemctl=1

# A mistake on the command line: exit 2, as the orchestrator does, before anything else is said or done.
usage_error() {
    log_error "$* (see --help)"
    exit 2
}

need_value() {
    [ "$2" -ge 2 ] || usage_error "$1 needs a value"
}

while [ $# -gt 0 ]; do
    case $1 in
        --uninstall) action=uninstall; shift ;;
        --no-enable) enable=0; shift ;;
        --no-systemctl) call_systemctl=0; shift ;;
        --root) need_value "$1" $#; root=$2; shift 2 ;;
        --python) need_value "$1" $#; python=$2; shift 2 ;;
        --dest) need_value "$1" $#; dest=$2; shift 2 ;;
        --systemctl) need_value "$1" $#; systemctl_cmd=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option: $1" ;;
    esac
done

case $python in
    "" | /*) ;;
    *) usage_error "--python must be an absolute path: $python" ;;
esac

if [ "$dest" = "$DEFAULT_DEST" ]; then
    require_root "installing units into $DEFAULT_DEST"
fi

# systemd is not running (a container, a chroot, a system booted with another init): the units are still
# written, and enabling waits for a system that has it.
if [ "$call_systemctl" = 1 ] && [ "$systemctl_cmd" = systemctl ] && [ ! -d /run/systemd/system ]; then
    log_warn "systemd is not running here: units written only; on a systemd system run" \
        "'systemctl daemon-reload && systemctl enable --now updates.timer' (or use config/updates.cron)"
    call_systemctl=0
fi

run_systemctl() {
    if [ "$call_systemctl" = 1 ]; then
        log_info "systemctl $*"
        "$systemctl_cmd" "$@" || die "systemctl $* failed"
    fi
}

uninstall() {
    local unit removed=0
    if [ -e "$dest/updates.timer" ]; then
        # The timer may already be disabled or unknown to systemd; removing the files is what matters.
        if [ "$call_systemctl" = 1 ]; then
            log_info "systemctl disable --now updates.timer"
            "$systemctl_cmd" disable --now updates.timer || log_warn "could not disable updates.timer"
        fi
    fi
    for unit in "${UNITS[@]}"; do
        if [ -e "$dest/$unit" ] || [ -L "$dest/$unit" ]; then
            rm -f -- "$dest/$unit"
            log_info "removed $dest/$unit"
            removed=1
        fi
    done
    if [ "$removed" = 1 ]; then
        run_systemctl daemon-reload
    else
        log_info "no units of updates in $dest: nothing to remove"
    fi
}

# Unit files give meaning to spaces, quotes, '%' and '\'; sed to '|' and '&'. An install path made of
# ordinary characters keeps the rendering exact instead of needing escapes for each consumer.
check_path() {
    case $2 in
        /*) ;;
        *) die "$1 must be an absolute path: $2" ;;
    esac
    if ! [[ $2 =~ ^[A-Za-z0-9._/+-]+$ ]]; then
        die "$1 may contain only letters, digits and . _ / + - (got: $2)"
    fi
}

tmp_files=()
cleanup() {
    if [ ${#tmp_files[@]} -gt 0 ]; then
        rm -f -- "${tmp_files[@]}"
    fi
}
trap cleanup EXIT

install_units() {
    local unit tmp changed=0
    root=$(cd -- "$root" 2>/dev/null && pwd -P) || die "--root: no such directory"
    [ -n "$python" ] || python="$root/venv/bin/python"
    check_path "the install directory" "$root"
    check_path "the python path" "$python"
    [ -f "$root/index.py" ] || die "$root/index.py not found: is $root an installation of updates?"
    [ -x "$python" ] || die "$python is not an executable file: run ./setup_venv.sh in $root first"
    mkdir -p -- "$dest"
    for unit in "${UNITS[@]}"; do
        [ -f "$here/$unit" ] || die "template $here/$unit is missing"
        # Rendered next to its destination, then renamed over it: systemd never reads a half-written unit.
        tmp=$(mktemp "$dest/.$unit.XXXXXX")
        tmp_files+=("$tmp")
        sed -e "s|@ROOT@|$root|g" -e "s|@PYTHON@|$python|g" -- "$here/$unit" >"$tmp"
        if grep -q '@[A-Z]*@' "$tmp"; then
            die "$unit: a placeholder was left unreplaced"
        fi
        chmod 0644 "$tmp"
        if cmp -s -- "$tmp" "$dest/$unit"; then
            rm -f -- "$tmp"
            log_info "$dest/$unit is up to date"
        else
            mv -f -- "$tmp" "$dest/$unit"
            log_info "wrote $dest/$unit"
            changed=1
        fi
    done
    if [ "$changed" = 1 ]; then
        run_systemctl daemon-reload
    fi
    if [ "$enable" = 1 ]; then
        run_systemctl enable --now updates.timer
        if [ "$call_systemctl" = 1 ]; then
            log_info "enabled; see the next run with: systemctl list-timers updates.timer"
        fi
    else
        log_info "not enabled (--no-enable); enable with: systemctl enable --now updates.timer"
    fi
}

if [ "$action" = uninstall ]; then
    uninstall
else
    install_units
fi
