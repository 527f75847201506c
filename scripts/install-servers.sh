#!/usr/bin/env bash
# install-servers.sh — installs the database servers `pointsman sandbox` runs.
#
#   scripts/install-servers.sh [mariadb|mysql|mariadb-11|all]...   (default: mariadb mysql)
#
#   mariadb     MariaDB 10.11 from Debian bookworm, into the system with apt-get.
#   mysql       MySQL 9.7 from Debian sid, unpacked into a private prefix
#               (default /opt/pointsman/mysql-9.7, env POINTSMAN_MYSQL_PREFIX).
#   mariadb-11  MariaDB 11.8 (and openssl) from Debian trixie, unpacked into a private
#               prefix (default /opt/pointsman/mariadb-11.8, env POINTSMAN_MARIADB11_PREFIX).
#
# Why a private prefix: MySQL 9.7 and MariaDB 11.8 need a newer glibc and libstdc++
# than bookworm has, and installing those into the system would break it. So we let
# apt resolve the whole dependency closure of the newer suite against an EMPTY dpkg
# status (libc6 included), download the .debs with our own apt state, `dpkg -x`
# them into the prefix, and run the servers through the prefix's own loader with
# `--library-path` (see docs / test-servers notes). Nothing outside the prefix changes.
#
# Idempotent: a prefix holds a marker file only after a complete, verified install;
# a second run with everything present downloads nothing and takes well under 2 s.
# A half-finished unpack has no marker and is redone from scratch.
set -euo pipefail

PROG=install-servers
MYSQL_PREFIX=${POINTSMAN_MYSQL_PREFIX:-/opt/pointsman/mysql-9.7}
MARIADB11_PREFIX=${POINTSMAN_MARIADB11_PREFIX:-/opt/pointsman/mariadb-11.8}
MARKER=.pointsman-installed

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() {
    DIED=1
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

# `set -e` stops at any unguarded failure; this says which step it was in.
STEP="starting"
DIED=""
step() { STEP=$*; }
on_exit() {
    local rc=$?
    if ((rc != 0)) && [[ -z "$DIED" ]]; then
        printf '%s: error: failed while %s (exit status %d); see the messages above\n' "$PROG" "$STEP" "$rc" >&2
    fi
}
trap on_exit EXIT

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

# The multiarch triplet and loader name of this machine: the prefix's libraries live
# in usr/lib/<triplet> and the loader is what runs the server.
case "$(uname -m)" in
x86_64) TRIPLET=x86_64-linux-gnu LOADER=ld-linux-x86-64.so.2 ;;
aarch64) TRIPLET=aarch64-linux-gnu LOADER=ld-linux-aarch64.so.1 ;;
*) die "unsupported machine architecture $(uname -m): only x86_64 and aarch64 are handled" ;;
esac

# ---------------------------------------------------------------------------------
# MariaDB 10.11 from the system's own suite (bookworm).

mariadb_installed() {
    local st
    st=$(dpkg-query -W -f='${db:Status-Status} ' mariadb-server-core mariadb-client-core 2>/dev/null || true)
    [[ "$st" == "installed installed " && -x /usr/sbin/mariadbd ]]
}

install_mariadb() {
    if mariadb_installed; then
        say "mariadb: already installed: $(/usr/sbin/mariadbd --version)"
        return 0
    fi
    step "installing MariaDB 10.11 with apt-get"
    [[ $(id -u) -eq 0 ]] || die "mariadb: installing system packages needs root; run this script as root (or with sudo)"
    export DEBIAN_FRONTEND=noninteractive
    local pkgs=(mariadb-server-core mariadb-client-core)
    # Update the package lists only when apt does not know the packages yet.
    if ! apt-cache show "${pkgs[@]}" >/dev/null 2>&1; then
        say "mariadb: package lists lack ${pkgs[*]}; running apt-get update"
        apt-get update -q || die "mariadb: apt-get update failed; check the mirrors in /etc/apt and the network"
    fi
    say "mariadb: apt-get install --no-install-recommends ${pkgs[*]}"
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
        # Stale lists name .debs the mirror no longer has (404): refresh once, retry.
        say "mariadb: install failed; refreshing package lists and retrying once"
        apt-get update -q || die "mariadb: apt-get update failed; check the mirrors in /etc/apt and the network"
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" ||
            die "mariadb: apt-get install ${pkgs[*]} failed; see apt's messages above"
    fi
    mariadb_installed || die "mariadb: apt-get reported success but /usr/sbin/mariadbd is missing"
    say "mariadb: installed: $(/usr/sbin/mariadbd --version)"
}

# ---------------------------------------------------------------------------------
# Private prefixes from a newer Debian suite.

# The Debian archive URI configured in /etc/apt (one-line .list or deb822 .sources),
# e.g. http://deb.debian.org/debian. We reuse its host so that only the mirror this
# machine already trusts (and can reach) is contacted.
debian_mirror() {
    local files=() f
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] && files+=("$f")
    done
    ((${#files[@]})) || return 1
    awk '
        # deb822 stanzas: honour "Enabled: no"; a blank line ends a stanza.
        function flush() { if (uris != "" && enabled) print uris; uris = ""; enabled = 1 }
        BEGIN { enabled = 1 }
        FILENAME != last { flush(); last = FILENAME }
        /^[[:space:]]*#/ { next }
        /^[[:space:]]*$/ { flush(); next }
        tolower($1) == "enabled:" && tolower($2) == "no" { enabled = 0; next }
        tolower($1) == "uris:" { $1 = ""; uris = $0; next }
        $1 == "deb" {
            for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i !~ /=/) { print $i; break }
        }
        END { flush() }
    ' "${files[@]}" | tr ' ' '\n' |
        grep -E '^https?://[^/]+/(.*/)?debian/?$' | grep -v -- '-security' | head -n1 | sed 's:/*$::'
}

is_perl() { [[ "$1" =~ ^(perl|perl-.*|libperl.*|.*-perl)$ ]]; }

# Merge the prefix's top-level lib/bin/sbin into usr/ the way usrmerge does, so that
# every shared library sits in usr/lib/<triplet>, the one directory we pass to the
# loader with --library-path.
usrmerge_prefix() {
    local p=$1 d
    for d in bin sbin lib lib64; do
        if [[ -d "$p/$d" && ! -L "$p/$d" ]]; then
            mkdir -p "$p/usr/$d"
            cp -a "$p/$d/." "$p/usr/$d/"
            rm -rf "${p:?}/$d"
            ln -s "usr/$d" "$p/$d"
        fi
    done
}

# prefix_run PREFIX PROGRAM ARGS... — run a program of the prefix with its own loader.
prefix_run() {
    local p=$1
    shift
    "$p/usr/lib/$TRIPLET/$LOADER" --library-path "$p/usr/lib/$TRIPLET" "$@"
}

# Every library the server needs must resolve inside the prefix; one from the host
# would be the wrong (older) glibc or libstdc++ and fail at run time.
verify_prefix() {
    local label=$1 p=$2 server=$3 out bad
    [[ -x "$p/usr/lib/$TRIPLET/$LOADER" ]] || die "$label: loader $p/usr/lib/$TRIPLET/$LOADER missing after unpack"
    [[ -x "$p$server" ]] || die "$label: server binary $p$server missing after unpack"
    out=$(prefix_run "$p" --list "$p$server") || die "$label: ld.so --list $p$server failed: $out"
    if grep -q 'not found' <<<"$out"; then
        die "$label: libraries of $p$server do not resolve: $(grep 'not found' <<<"$out" | tr -s '\t ' ' ')"
    fi
    bad=$(awk -v p="$p/" '$2 == "=>" && $3 ~ /^\// && index($3, p) != 1 { print $1 " => " $3 }' <<<"$out")
    [[ -z "$bad" ]] || die "$label: libraries of $p$server resolve outside the prefix: $bad"
}

# install_prefix LABEL SUITE PREFIX SERVER-BINARY PACKAGE...
install_prefix() {
    local label=$1 suite=$2 prefix=$3 server=$4
    shift 4
    local pkgs=("$@")
    prefix=${prefix%/}
    [[ "$prefix" == /* ]] || die "$label: prefix '$prefix' must be an absolute path"

    if [[ -f "$prefix/$MARKER" && -x "$prefix$server" ]]; then
        say "$label: already installed in $prefix: $(prefix_run "$prefix" "$prefix$server" --version)"
        return 0
    fi

    step "preparing $prefix for $label"
    local parent base
    parent=$(dirname "$prefix")
    base=$(basename "$prefix")
    mkdir -p "$parent" || die "$label: cannot create $parent; run as root or set the prefix variable to a writable path"
    # One installer per prefix at a time; a second one waits, then finds the marker.
    exec 9>"$parent/.$base.lock"
    flock 9
    if [[ -f "$prefix/$MARKER" && -x "$prefix$server" ]]; then
        say "$label: installed in $prefix by a concurrent run: $(prefix_run "$prefix" "$prefix$server" --version)"
        return 0
    fi

    local mirror
    mirror=$(debian_mirror) || true
    [[ -n "$mirror" ]] || die "$label: no Debian archive URI (http[s]://host/debian) found in /etc/apt/sources.list or /etc/apt/sources.list.d/"

    # Own apt state, kept next to the prefix so an interrupted run can reuse the
    # downloaded .debs; removed after a complete install.
    local state="$parent/.$base.apt"
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/debs" "$state/empty.d"
    : >"$state/status"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$mirror" "$suite" >"$state/sources.list"
    local sandbox_user=root
    [[ $(id -u) -eq 0 ]] || sandbox_user=$(id -un)
    local O=(
        -o "Dir::Etc::sourcelist=$state/sources.list"
        -o "Dir::Etc::sourceparts=$state/empty.d"
        -o "Dir::Etc::preferences=$state/empty.d/none"
        -o "Dir::Etc::preferencesparts=$state/empty.d"
        -o "Dir::State=$state"
        -o "Dir::State::Lists=$state/lists"
        -o "Dir::State::status=$state/status"
        -o "Dir::Cache=$state/cache"
        -o "APT::Sandbox::User=$sandbox_user"
        -o Acquire::Languages=none
        -o APT::Install-Recommends=0
    )

    say "$label: reading Debian $suite package lists from $mirror"
    apt-get -q "${O[@]}" update || die "$label: apt-get update for Debian $suite from $mirror failed; check the network and the mirror"

    local closure=() pkg
    while read -r pkg; do
        is_perl "$pkg" || closure+=("$pkg")
    done < <(apt-get "${O[@]}" -s install --no-install-recommends "${pkgs[@]}" | awk '/^Inst /{print $2}')
    ((${#closure[@]})) || die "$label: apt could not resolve ${pkgs[*]} in Debian $suite; see apt's messages above"

    step "downloading the $label packages"
    say "$label: downloading ${#closure[@]} packages from Debian $suite"
    (cd "$state/debs" && apt-get -q "${O[@]}" download "${closure[@]}") ||
        die "$label: downloading the .debs from $mirror failed; check the network and rerun"

    # Unpack into a sibling directory and move it into place only when complete.
    local partial="$prefix.partial"
    rm -rf "$partial"
    mkdir -p "$partial"
    step "unpacking the $label packages into $partial"
    say "$label: unpacking into $prefix"
    local deb
    for pkg in "${closure[@]}"; do
        # apt-get download names files <name>_<version>_<arch>.deb (':' escaped).
        deb=$(find "$state/debs" -maxdepth 1 -name "${pkg}_*.deb" | head -n1)
        [[ -n "$deb" ]] || die "$label: downloaded package $pkg not found in $state/debs"
        dpkg -x "$deb" "$partial" || die "$label: dpkg -x $deb failed (disk full?)"
    done
    step "merging $partial/{bin,sbin,lib} into usr/"
    usrmerge_prefix "$partial"
    verify_prefix "$label" "$partial" "$server"
    local version
    version=$(prefix_run "$partial" "$partial$server" --version) || die "$label: $partial$server --version failed"
    {
        printf 'suite=%s\nmirror=%s\ninstalled=%s\nversion=%s\npackages=%s\n' \
            "$suite" "$mirror" "$(date -u +%FT%TZ)" "$version" "${closure[*]}"
    } >"$partial/$MARKER"

    step "moving $partial into place as $prefix"
    rm -rf "$prefix"
    mv "$partial" "$prefix" || die "$label: could not move $partial to $prefix"
    rm -rf "$state"
    say "$label: installed in $prefix: $(prefix_run "$prefix" "$prefix$server" --version)"
}

install_mysql() {
    install_prefix mysql sid "$MYSQL_PREFIX" /usr/sbin/mysqld mysql-server-core mysql-client-core
}

install_mariadb11() {
    # openssl: the sandbox makes one TLS certificate per template with it; without a
    # certificate MariaDB 11.8 generates an RSA key at every start (0.2-0.6 s CPU).
    install_prefix mariadb-11 trixie "$MARIADB11_PREFIX" /usr/sbin/mariadbd mariadb-server-core mariadb-client-core openssl
}

main() {
    local targets=("$@") t
    ((${#targets[@]})) || targets=(mariadb mysql)
    for t in "${targets[@]}"; do
        case "$t" in
        mariadb | mysql | mariadb-11 | all) ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown flavour '$t'; expected mariadb, mysql, mariadb-11 or all" ;;
        esac
    done
    for t in "${targets[@]}"; do
        case "$t" in
        mariadb) install_mariadb ;;
        mysql) install_mysql ;;
        mariadb-11) install_mariadb11 ;;
        all)
            install_mariadb
            install_mysql
            install_mariadb11
            ;;
        esac
    done
}

main "$@"
