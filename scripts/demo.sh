#!/usr/bin/env bash
# The demo in one command: installs the servers for the flavour (idempotent), builds
# pointsman, starts a real 3-node topology and the agent watching it. Ctrl-C stops
# and removes everything it started. Needs root for the installs (apt-get).
#
#   scripts/demo.sh [mariadb|mysql|mariadb-11] [--port N] [--dns-port N] [--dir DIR]
#
# The options come in any order; the flavour may also be given as --flavor NAME.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
    echo "demo.sh: error: $*" >&2
    exit 1
}

flavor=mariadb
port=3000
dns_port=8053
dir=/tmp/pointsman-demo
while [ $# -gt 0 ]; do
    case "$1" in
    mariadb | mysql | mariadb-11) flavor=$1 ;;
    --flavor) flavor=${2:?--flavor needs a value}; shift ;;
    --flavor=*) flavor=${1#*=} ;;
    --port) port=${2:?--port needs a value}; shift ;;
    --port=*) port=${1#*=} ;;
    --dns-port) dns_port=${2:?--dns-port needs a value}; shift ;;
    --dns-port=*) dns_port=${1#*=} ;;
    --dir) dir=${2:?--dir needs a value}; shift ;;
    --dir=*) dir=${1#*=} ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (expected mariadb, mysql, mariadb-11, --port N, --dns-port N, --dir DIR)" ;;
    esac
    shift
done
case "$flavor" in
mariadb | mysql | mariadb-11) ;;
*) die "unknown flavour '$flavor': expected mariadb, mysql or mariadb-11" ;;
esac
for value in "$port" "$dns_port"; do
    [[ "$value" =~ ^[0-9]+$ ]] && [ "$value" -ge 1 ] && [ "$value" -le 65535 ] ||
        die "'$value' is not a port number (1-65535)"
done

# The ports are checked now, not after a build of several minutes.
port_in_use() { # protocol port
    if command -v ss >/dev/null 2>&1; then
        local flag=-ltnH
        [ "$1" = udp ] && flag=-lunH
        ss "$flag" "sport = :$2" 2>/dev/null | grep -q .
    elif [ "$1" = tcp ]; then
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null
    else
        return 1
    fi
}
if port_in_use tcp "$port"; then
    die "port $port (the API and web page) is in use; choose another with --port, e.g. scripts/demo.sh --port 3001"
fi
if port_in_use tcp "$dns_port" || port_in_use udp "$dns_port"; then
    die "port $dns_port (the DNS responder) is in use; choose another with --dns-port, e.g. scripts/demo.sh --dns-port 8054"
fi

if ! command -v cargo >/dev/null 2>&1; then
    die "cargo not found; install Rust (https://rustup.rs) first"
fi
scripts/install-servers.sh "$flavor"
# dig, for querying the demo's DNS responder as the demo suggests (optional).
if ! command -v dig >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bind9-dnsutils ||
        echo "demo.sh: note: could not install bind9-dnsutils; the demo runs without dig" >&2
fi
echo "demo.sh: building pointsman (the first build takes several minutes) ..."
cargo build --release --locked
exec target/release/pointsman demo --flavor "$flavor" --port "$port" --dns-port "$dns_port" --dir "$dir"
