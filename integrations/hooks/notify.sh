#!/usr/bin/env bash
# Tells people what pointsman is doing, at any hook point: one line to syslog
# (`logger -t pointsman`; stderr if logger is missing or fails) and, when
# POINTSMAN_NOTIFY_URL is set, a JSON message POSTed to that webhook. The JSON has a
# "text" field, which Slack- and Mattermost-style incoming webhooks show as is, plus
# one field per pointsman variable for anything that wants to route on them.
#
# Exit status: 1 when the webhook could not be reached, so the audit log shows the
# notification was lost — except at pre_failover and pre_switchover, where a non-zero
# exit would abort the recovery: a notification must never block a failover, so there
# the failure is only reported in the output.
#
# Settings (environment of the pointsman agent):
#   POINTSMAN_NOTIFY_URL      webhook to POST to (optional)
#   POINTSMAN_NOTIFY_TIMEOUT  seconds for the whole POST (default 10; keep it under
#                             the [hooks] timeout)
set -euo pipefail

HOOK=${POINTSMAN_HOOK:-unknown}
FAILURE_TYPE=${POINTSMAN_FAILURE_TYPE:-}
CLUSTER=${POINTSMAN_CLUSTER:-}
RECOVERY_ID=${POINTSMAN_RECOVERY_ID:-}
URL=${POINTSMAN_NOTIFY_URL:-}
TIMEOUT=${POINTSMAN_NOTIFY_TIMEOUT:-10}

# host:port, or empty when pointsman passed no instance.
instance() {
	if [[ -n $1 ]]; then
		printf '%s:%s' "$1" "$2"
	fi
}
FAILED=$(instance "${POINTSMAN_FAILED_HOST:-}" "${POINTSMAN_FAILED_PORT:-}")
SUCCESSOR=$(instance "${POINTSMAN_SUCCESSOR_HOST:-}" "${POINTSMAN_SUCCESSOR_PORT:-}")

where="cluster ${CLUSTER:-?}"
case $HOOK in
on_failure_detected)
	message="$where: detected ${FAILURE_TYPE:-a failure} on ${FAILED:-an instance}"
	priority=user.warning
	;;
pre_failover)
	message="$where: failing over from ${FAILED:-the failed primary} (${FAILURE_TYPE:-failure})${SUCCESSOR:+ to $SUCCESSOR}"
	priority=user.warning
	;;
post_failover)
	message="$where: failed over from ${FAILED:-the failed primary} to ${SUCCESSOR:-a new primary} (${FAILURE_TYPE:-failure})"
	priority=user.notice
	;;
post_unsuccessful_failover)
	message="$where: FAILOVER FAILED for ${FAILED:-the failed primary} (${FAILURE_TYPE:-failure}); the cluster needs a person"
	priority=user.crit
	;;
pre_switchover)
	message="$where: switching over from ${FAILED:-the primary}${SUCCESSOR:+ to $SUCCESSOR}"
	priority=user.notice
	;;
post_switchover)
	message="$where: switched over from ${FAILED:-the old primary} to ${SUCCESSOR:-a new primary}"
	priority=user.notice
	;;
*)
	message="$where: $HOOK (${FAILURE_TYPE:-no failure type})"
	priority=user.notice
	;;
esac
if [[ -n $RECOVERY_ID ]]; then
	message="$message [recovery $RECOVERY_ID]"
fi

if ! command -v logger >/dev/null 2>&1 || ! logger -t pointsman -p "$priority" -- "$message"; then
	printf 'pointsman: %s\n' "$message" >&2
fi

[[ -n $URL ]] || exit 0

# A JSON string body: quotes, backslashes and control characters escaped.
json_string() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\n'/\\n}
	s=${s//$'\r'/\\r}
	s=${s//$'\t'/\\t}
	s=${s//[[:cntrl:]]/}
	printf '"%s"' "$s"
}

payload=$(
	printf '{"text":%s,"hook":%s,"failure_type":%s,"cluster":%s,"failed":%s,"successor":%s,"recovery_id":%s}' \
		"$(json_string "pointsman: $message")" "$(json_string "$HOOK")" \
		"$(json_string "$FAILURE_TYPE")" "$(json_string "$CLUSTER")" \
		"$(json_string "$FAILED")" "$(json_string "$SUCCESSOR")" \
		"$(json_string "$RECOVERY_ID")"
)

if curl --silent --show-error --fail --max-time "$TIMEOUT" \
	--header 'Content-Type: application/json' --data-binary @- "$URL" <<<"$payload" >/dev/null; then
	exit 0
else
	rc=$?
fi
printf 'notify: could not post to the webhook (curl exit %s)\n' "$rc" >&2
case $HOOK in
pre_*) exit 0 ;;
*) exit 1 ;;
esac
