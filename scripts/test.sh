#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs the database servers the
# tests run against (MariaDB 10.11, MySQL 9.7 and MariaDB 11.8; idempotent, fast when
# present; ProxySQL is found, not installed: see below), the DNS tools (dig, dnsperf, nsd), Chromium and playwright-core for the browser
# tests (Node.js 20 or later), then runs every test binary, even after one fails.
#
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
scripts/install-servers.sh mariadb mysql mariadb-11
# DNS tools the routing tests query the embedded responder with (dig), and the DNS
# benchmark's load generator (dnsperf) and yardstick (nsd, which the bench starts itself).
missing=()
for package in bind9-dnsutils dnsperf nsd; do
    dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null | grep -q '^installed$' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: error: install ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Debian starts NSD's own service on port 53 when systemd runs. The bench never uses
    # it (it starts an NSD of its own on a free port), so the service this install just
    # started is stopped and disabled; one that was there before is left alone.
    if [[ " ${missing[*]} " == *" nsd "* ]] && command -v systemctl >/dev/null 2>&1 \
        && systemctl is-active --quiet nsd 2>/dev/null; then
        systemctl disable --now nsd
    fi
fi
# The web page's browser tests (tests/web.rs): Debian's Chromium, driven headless by
# playwright-core from web-tests/ (pinned in its package-lock.json; it never downloads a
# browser of its own). Node and npm are on the machine.
if ! dpkg-query -W -f='${db:Status-Status}' chromium 2>/dev/null | grep -q '^installed$'; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: error: install chromium (sudo apt-get install chromium)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
# playwright-core refuses Node.js before 20, and Debian 12's own nodejs is 18: say so
# up front rather than installing one that cannot run the tests.
node_major=$(node --version 2>/dev/null | sed -n 's/^v\([0-9][0-9]*\)\..*/\1/p')
if [ -z "$node_major" ] || [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null 2>&1; then
    echo "test.sh: error: the browser tests need Node.js 20 or later with npm (found: $(node --version 2>/dev/null || echo none));" >&2
    echo "test.sh: Debian 12's nodejs package is 18 — install Node.js 20+ (e.g. from NodeSource or nvm) and run this again" >&2
    exit 1
fi
if [ ! -d web-tests/node_modules/playwright-core ]; then
    npm ci --prefix web-tests --no-audit --no-fund
fi
# The routing tests run against a real ProxySQL when one is found: $POINTSMAN_PROXYSQL,
# or proxysql on the PATH (a user installs ProxySQL from its own packages; CI points the
# variable at ProxySQL 2.7.1). Without one they run on the stand-in in tests/support, and
# the tests that only a real ProxySQL can run say they were skipped.
if [ -n "${POINTSMAN_PROXYSQL:-}" ]; then
    proxysql_used="the real ProxySQL at $POINTSMAN_PROXYSQL"
elif command -v proxysql >/dev/null 2>&1; then
    proxysql_used="the real ProxySQL at $(command -v proxysql)"
else
    proxysql_used="the ProxySQL stand-in (no real ProxySQL: set POINTSMAN_PROXYSQL or put proxysql on the PATH)"
    export POINTSMAN_PROXYSQL_OPTIONAL=1
fi
echo "test.sh: routing tests use $proxysql_used"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --no-fail-fast --features failpoints "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1); if ($(i) ~ /^ignored/) s += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
echo "tests: ProxySQL routing ran on $proxysql_used"
exit "$status"
