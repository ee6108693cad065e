#!/usr/bin/env bash
# Installs what the dashboard's browser tests drive: Debian's `chromium` and `chromium-driver`.
# Idempotent and quiet when both are present; needs root (or sudo) and apt-get otherwise.
# The tests fail with a clear message when the browser is missing, unless TALLY_SKIP_BROWSER=1.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi

fail() {
    echo "install-browser: $*" >&2
    echo "install-browser: the dashboard's browser tests need /usr/bin/chromium and /usr/bin/chromedriver;" >&2
    echo "install-browser: install Debian's chromium and chromium-driver, or set TALLY_SKIP_BROWSER=1 to skip those tests" >&2
    exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found (not a Debian-like system)"

as_root=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || fail "not root and no sudo to run apt-get"
    as_root=(sudo -n)
fi

echo "install-browser: installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "${as_root[@]}" apt-get update -q >"$log" 2>&1; then
    cat "$log" >&2
    fail "apt-get update failed"
fi
if ! "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver >"$log" 2>&1; then
    cat "$log" >&2
    fail "apt-get install chromium chromium-driver failed"
fi
[[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] ||
    fail "apt-get finished but /usr/bin/chromium or /usr/bin/chromedriver is still missing"
echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) installed"
