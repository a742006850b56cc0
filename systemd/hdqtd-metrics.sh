#!/bin/sh
# SPDX-License-Identifier: MIT
# Write hdqtd's metrics for the Prometheus node exporter's textfile
# collector (Debian: /var/lib/prometheus/node-exporter/*.prom), atomically:
# the collector reads *.prom only, so the text goes to a temporary name in
# the same directory and is renamed over the old file once complete.  When
# hdqtd does not answer, the file says hdqtd_up 0 (rather than going stale)
# and the exit status is 1, so the unit shows as failed too.  No fsync: the
# file is rewritten every few seconds and worthless after a crash.
set -u
out=${1:-/var/lib/prometheus/node-exporter/hdqtd.prom}
ctl=${HDQTCTL:-hdqtctl}
tmp="$out.$$.tmp"
trap 'rm -f "$tmp"' EXIT
rc=0
if ! "$ctl" --timeout 10 metrics --prometheus >"$tmp"; then
	rc=1
	printf '%s\n' '# HELP hdqtd_up 1 if hdqtd answered the metrics request.' \
		'# TYPE hdqtd_up gauge' 'hdqtd_up 0' >"$tmp" || exit 1
fi
chmod 0644 "$tmp" && mv -f "$tmp" "$out" || exit 1
exit $rc
