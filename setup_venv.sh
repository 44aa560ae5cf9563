#!/usr/bin/env bash
# Create the virtual environment ./venv (or $VENV_DIR) and install what updates needs.
#   ./setup_venv.sh          runtime requirements, plus each module's own requirements.txt
#   ./setup_venv.sh --dev    also the test and lint tools (requirements-dev.txt)
# Safe to re-run: an existing healthy venv is reused and only missing packages are installed.
# PYTHON picks the interpreter used to create the venv (default: python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=config/utils.sh
. "$ROOT/config/utils.sh"

usage() { sed -n '2,6s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option: $arg (see --help)" ;;
  esac
done

python="${PYTHON:-python3}"
venv="${VENV_DIR:-$ROOT/venv}"
min_check='import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'

command -v "$python" >/dev/null 2>&1 \
  || die "$python not found: install Python 3.10 or newer (Debian/Ubuntu: apt-get install python3 python3-venv)"
"$python" -c "$min_check" \
  || die "$("$python" -V 2>&1 || echo "$python") is too old: updates needs Python 3.10 or newer"
"$python" -c 'import venv, ensurepip' >/dev/null 2>&1 \
  || die "the Python venv module is missing: install it (Debian/Ubuntu: apt-get install python3-venv)"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$min_check" >/dev/null 2>&1 \
    && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  log_info "reusing the virtual environment in $venv"
else
  if [ -e "$venv" ]; then
    # Only ever delete something that is recognisably a venv.
    [ -f "$venv/pyvenv.cfg" ] || die "$venv exists and is not a virtual environment; move it away or set VENV_DIR"
    log_warn "the virtual environment in $venv is broken; recreating it"
    rm -rf -- "$venv"
  fi
  log_info "creating a virtual environment in $venv"
  "$python" -m venv "$venv" || die "could not create $venv"
fi

pip_install() {
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
    || die "pip install $* failed (see the messages above)"
}

pip_install -r "$ROOT/requirements.txt"
for req in "$ROOT"/*/requirements.txt; do
  [ -f "$req" ] || continue
  case "$req" in "$venv"/*) continue ;; esac
  log_info "installing the requirements of module $(basename "$(dirname "$req")")"
  pip_install -r "$req"
done
if [ "$dev" = 1 ]; then
  pip_install -r "$ROOT/requirements-dev.txt"
fi
log_info "ready: $venv/bin/python $ROOT/index.py"
