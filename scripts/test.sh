#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs the database servers the
# tests run against (MariaDB 10.11 and MySQL 9.7; idempotent, fast when present),
# then runs every unit and integration test.
#
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: error: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
scripts/install-servers.sh mariadb mysql
cargo test --locked "$@"
