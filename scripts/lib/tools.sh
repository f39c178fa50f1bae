# shellcheck shell=bash
# Cargo tools that scripts/test runs, installed once per machine (sourced by scripts/test).
#
#   tools_install   install the pinned versions below into $TOOLS_DIR (default
#                   ~/.cache/latchkey-tools; LATCHKEY_TOOLS_DIR to move it) unless that
#                   version is already there; sets TOOLS_BIN.

CARGO_MACHETE_VERSION=0.9.2
CARGO_DENY_VERSION=0.20.2

TOOLS_DIR="${LATCHKEY_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/latchkey-tools}"
TOOLS_BIN="$TOOLS_DIR/bin"

# _tool_install NAME VERSION
_tool_install() {
    local name="$1" version="$2" stamp="$TOOLS_DIR/.$1.version"
    if [[ -x "$TOOLS_BIN/$name" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
        echo "$name $version is installed"
        return 0
    fi
    echo "installing $name $version into $TOOLS_DIR (once per machine)"
    cargo install --quiet --force --locked --version "$version" --root "$TOOLS_DIR" "$name" || return 1
    echo "$version" >"$stamp"
}

tools_install() {
    mkdir -p "$TOOLS_DIR"
    _tool_install cargo-machete "$CARGO_MACHETE_VERSION" && _tool_install cargo-deny "$CARGO_DENY_VERSION"
}
