#!/usr/bin/env bash
# The demo in one command: installs the servers for the flavour (idempotent), builds
# pointsman, starts a real 3-node topology and the agent watching it. Ctrl-C stops
# and removes everything it started.
#
#   scripts/demo.sh [mariadb|mysql|mariadb-11] [more `pointsman demo` options]
set -euo pipefail
cd "$(dirname "$0")/.."

flavor=${1:-mariadb}
[ $# -gt 0 ] && shift
if ! command -v cargo >/dev/null 2>&1; then
    echo "demo.sh: error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
scripts/install-servers.sh "$flavor"
# dig, for querying the demo's DNS responder as the demo suggests (optional).
if ! command -v dig >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bind9-dnsutils ||
        echo "demo.sh: note: could not install bind9-dnsutils; the demo runs without dig" >&2
fi
cargo build --release --locked
exec target/release/pointsman demo --flavor "$flavor" "$@"
