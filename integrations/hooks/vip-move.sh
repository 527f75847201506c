#!/usr/bin/env bash
# Moves a virtual IP from the failed (or demoted) primary's host to the successor's
# host, for pointsman's post_failover and post_switchover hooks:
#   1. remove the VIP on the old host   (may fail: the host may be down; reported, not fatal)
#   2. add the VIP on the new host      (`ip addr replace`, so a re-run is harmless)
#   3. gratuitous ARP from the new host (`arping -U`), so switches and clients
#      forget the old MAC address now instead of when their ARP caches expire
# Removing first matters: two hosts answering for one address is worse than a
# moment with none.
#
# Exit status: 0 moved; 1 the VIP is not up on the new host (or bad settings);
# 2 the VIP is up on the new host but the old host still may have it or the ARP
# announcement failed: look at the output, and fence the old host if it comes back.
#
# Settings (environment of the pointsman agent, e.g. systemd Environment=):
#   POINTSMAN_VIP           the address with its prefix, e.g. 10.0.0.100/24 (required)
#   POINTSMAN_VIP_IFACE     the interface on the database hosts (default eth0)
#   POINTSMAN_VIP_REMOTE    how to run a command on a host; it gets the host name and
#                           then the command words (default: ssh, non-interactive, 5 s
#                           connect timeout). The remote user must be allowed to run
#                           `ip` and `arping`, e.g. root, or add `sudo -n` via
#                           POINTSMAN_VIP_SUDO.
#   POINTSMAN_VIP_SUDO      words put before `ip`/`arping` on the remote side (default none)
#   POINTSMAN_VIP_DRY_RUN=1 print each command instead of running it
# From pointsman: POINTSMAN_FAILED_HOST, POINTSMAN_SUCCESSOR_HOST, POINTSMAN_HOOK,
# POINTSMAN_CLUSTER.
set -euo pipefail

VIP=${POINTSMAN_VIP:?set POINTSMAN_VIP to the virtual IP with its prefix, e.g. 10.0.0.100/24}
IFACE=${POINTSMAN_VIP_IFACE:-eth0}
read -r -a REMOTE <<<"${POINTSMAN_VIP_REMOTE:-ssh -o BatchMode=yes -o ConnectTimeout=5}"
read -r -a SUDO <<<"${POINTSMAN_VIP_SUDO:-}"
DRY_RUN=${POINTSMAN_VIP_DRY_RUN:-0}
# In a dry run every report says so, so its output cannot be mistaken for a real move.
DRY=""
if [[ $DRY_RUN == 1 ]]; then
	DRY="dry run: "
fi

OLD_HOST=${POINTSMAN_FAILED_HOST:-}
NEW_HOST=${POINTSMAN_SUCCESSOR_HOST:-}
# arping wants the bare address, `ip addr` the address with its prefix.
VIP_ADDRESS=${VIP%/*}

say() { printf 'vip-move: %s%s\n' "$DRY" "$*"; }
warn() { printf 'vip-move: %sWARNING: %s\n' "$DRY" "$*" >&2; }

# Runs (or, in a dry run, prints) a command on a host.
on_host() {
	local host=$1
	shift
	if [[ $DRY_RUN == 1 ]]; then
		say "would run: ${REMOTE[*]} $host ${SUDO[*]}${SUDO[*]:+ }$*"
		return 0
	fi
	"${REMOTE[@]}" "$host" "${SUDO[@]}" "$@"
}

if [[ -z $NEW_HOST ]]; then
	say "no successor in ${POINTSMAN_HOOK:-this hook} for cluster ${POINTSMAN_CLUSTER:-?}: nothing to move the VIP $VIP to" >&2
	exit 1
fi
if [[ $OLD_HOST == "$NEW_HOST" ]]; then
	say "old and new primary share the host $NEW_HOST: the VIP $VIP stays where it is"
	exit 0
fi

status=0

if [[ -z $OLD_HOST ]]; then
	warn "no failed host given: cannot remove $VIP from it; make sure no other host has it"
	status=2
elif on_host "$OLD_HOST" ip addr del "$VIP" dev "$IFACE"; then
	say "removed $VIP from $IFACE on $OLD_HOST"
else
	rc=$?
	# Expected when the old primary's host is down; dangerous if it is only cut off
	# and comes back with the address still configured.
	warn "could not remove $VIP from $IFACE on $OLD_HOST (exit $rc); if that host comes back it may still answer for $VIP: fence it or remove the address by hand"
	status=2
fi

if on_host "$NEW_HOST" ip addr replace "$VIP" dev "$IFACE"; then
	say "added $VIP on $IFACE on $NEW_HOST"
else
	rc=$?
	warn "could not add $VIP on $IFACE on $NEW_HOST (exit $rc): the VIP is not up anywhere pointsman knows of"
	exit 1
fi

if on_host "$NEW_HOST" arping -c 3 -U -I "$IFACE" "$VIP_ADDRESS"; then
	say "announced $VIP_ADDRESS from $NEW_HOST (gratuitous ARP)"
else
	rc=$?
	warn "gratuitous ARP for $VIP_ADDRESS from $NEW_HOST failed (exit $rc): clients may reach the old host until their ARP caches expire"
	status=2
fi

exit "$status"
