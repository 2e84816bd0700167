# shellcheck shell=bash
# Sourced by scripts/test and scripts/serve; not run on its own.
#
#   source scripts/_setup.sh
#   propledger_setup dev || exit 1     # or: propledger_setup   (no extras, for serving)
#
# Finds the newest Python >= 3.11 (python3.13, python3.12, python3.11, pyenv installs,
# then python3), makes .venv in the repository root (remade if its Python is missing or
# older than 3.11), and runs `pip install -e '.[EXTRAS]'` only when pyproject.toml or the
# extras changed since the last successful install (a hash kept in .venv). Then puts
# .venv/bin first on PATH. Quiet when nothing goes wrong; pip's output is shown on failure.

PROPLEDGER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROPLEDGER_VENV="$PROPLEDGER_ROOT/.venv"
PROPLEDGER_STAMP="$PROPLEDGER_VENV/.propledger-install-stamp"

_pl_err() {
    printf 'setup: %s\n' "$*" >&2
}

# True when "$1" runs and is Python >= 3.11.
_pl_python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

# Prints the real executable of the preferred Python >= 3.11, or fails.
_pl_find_python() {
    local minor cand
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    local -a cands=()
    for minor in 13 12 11; do
        cands+=("python3.$minor")
        # pyenv installs, newest patch first (a pyenv shim may exist but not be selected).
        while IFS= read -r cand; do
            [[ -n $cand ]] && cands+=("$cand")
        done < <(compgen -G "$pyenv_root/versions/3.$minor.*/bin/python" | sort -rV)
    done
    cands+=(python3)
    for cand in "${cands[@]}"; do
        if _pl_python_ok "$cand"; then
            "$cand" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

_pl_ensure_venv() {
    local py
    if [[ -x $PROPLEDGER_VENV/bin/python ]] && _pl_python_ok "$PROPLEDGER_VENV/bin/python"; then
        return 0
    fi
    if ! py="$(_pl_find_python)"; then
        _pl_err "no Python >= 3.11 found (tried python3.13, python3.12, python3.11," \
            "${PYENV_ROOT:-$HOME/.pyenv}/versions/3.1{3,2,1}.*/bin/python and python3)."
        _pl_err "install one (e.g. 'pyenv install 3.13' or your OS package) and run again."
        return 1
    fi
    if [[ -e $PROPLEDGER_VENV ]]; then
        _pl_err "removing $PROPLEDGER_VENV: its Python is missing or older than 3.11"
        rm -rf "$PROPLEDGER_VENV" || return 1
    fi
    _pl_err "creating .venv with $py ($("$py" -c 'import platform; print(platform.python_version())'))"
    if ! "$py" -m venv "$PROPLEDGER_VENV"; then
        _pl_err "'$py -m venv $PROPLEDGER_VENV' failed"
        return 1
    fi
}

# Hash of pyproject.toml and the extras: what the stamp holds after an install.
_pl_hash() {
    "$PROPLEDGER_VENV/bin/python" - "$PROPLEDGER_ROOT/pyproject.toml" "$1" <<'PY'
import hashlib
import sys

with open(sys.argv[1], "rb") as f:
    digest = hashlib.sha256(f.read())
digest.update(b"\0extras=" + sys.argv[2].encode())
print(digest.hexdigest())
PY
}

_pl_install() {
    local extras="${1-}" spec="." want have="" log
    [[ -n $extras ]] && spec=".[$extras]"
    want="$(_pl_hash "$extras")" || return 1
    [[ -f $PROPLEDGER_STAMP ]] && have="$(<"$PROPLEDGER_STAMP")"
    [[ $have == "$want" ]] && return 0
    # An install with the dev extras also serves a plain one: don't flip-flop.
    if [[ -z $extras && -n $have && $have == "$(_pl_hash dev)" ]]; then
        return 0
    fi
    if [[ -z $have ]]; then
        _pl_err "pip install -e '$spec' (first install into this .venv)"
    else
        _pl_err "pip install -e '$spec' (pyproject.toml changed since the last install)"
    fi
    rm -f "$PROPLEDGER_STAMP"
    log="$PROPLEDGER_VENV/.propledger-install.log"
    if ! (cd "$PROPLEDGER_ROOT" && "$PROPLEDGER_VENV/bin/python" -m pip install \
        --quiet --disable-pip-version-check -e "$spec") >"$log" 2>&1; then
        cat "$log" >&2
        _pl_err "pip install -e '$spec' failed (log above, also in $log)"
        return 1
    fi
    printf '%s\n' "$want" >"$PROPLEDGER_STAMP"
}

# propledger_ensure_chromium: Debian's chromium for the browser tests (tests/browser/),
# installed with apt-get when it is missing: as root directly, else through `sudo -n`.
# When it cannot be installed (not root, no passwordless sudo, no apt-get), it says why
# and returns 0: the browser tests then skip with that reason (under CI=true they fail).
# PROPLEDGER_CHROMIUM (default /usr/bin/chromium) names the binary to look for;
# PROPLEDGER_SETUP_DRY_RUN=1 prints the commands instead of running them.
propledger_ensure_chromium() {
    local chromium="${PROPLEDGER_CHROMIUM:-/usr/bin/chromium}" log
    local -a as_root=()
    [[ -x $chromium ]] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        _pl_err "chromium is missing ($chromium) and there is no apt-get: the browser tests will be skipped"
        return 0
    fi
    if [[ $(id -u) != 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
            as_root=(sudo -n)
        else
            _pl_err "chromium is missing ($chromium); installing it needs root or passwordless sudo:"
            _pl_err "  apt-get update && apt-get install -y --no-install-recommends chromium"
            _pl_err "the browser tests will be skipped (under CI=true they fail)"
            return 0
        fi
    fi
    local -a update=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq)
    local -a install=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends chromium)
    if [[ -n ${PROPLEDGER_SETUP_DRY_RUN-} ]]; then
        printf 'dry run: %s\n' "${update[*]}" "${install[*]}"
        return 0
    fi
    _pl_err "installing Debian's chromium for the browser tests (apt-get, once)"
    log="$(mktemp)"
    if ! { "${update[@]}" && "${install[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        _pl_err "apt-get could not install chromium (log above): the browser tests will be skipped"
    fi
    rm -f "$log"
    return 0
}

# propledger_setup [EXTRAS]: make .venv ready; EXTRAS is e.g. "dev" or empty.
propledger_setup() {
    _pl_ensure_venv || return 1
    _pl_install "${1-}" || return 1
    export VIRTUAL_ENV="$PROPLEDGER_VENV"
    case ":$PATH:" in
        *":$PROPLEDGER_VENV/bin:"*) ;;
        *) export PATH="$PROPLEDGER_VENV/bin:$PATH" ;;
    esac
}
