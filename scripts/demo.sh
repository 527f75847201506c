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
cargo build --release --locked
exec target/release/pointsman demo --flavor "$flavor" "$@"
