#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/deps.sh on a machine whose last dpkg run was interrupted (the CI
# machine of 2026-12-06: apt refused every install with "dpkg was
# interrupted, you must manually run 'dpkg --configure -a'" and the test
# command stopped after 4 s).  Works on a copy of the dpkg database
# (HDQT_DPKG_ADMINDIR), never on the machine's own: an unfinished status
# update of an installed package, as dpkg leaves it in <admindir>/updates,
# must be finished by deps.sh (updates/ empty, the status unchanged).
# Needs root (dpkg --configure); exit 77 (skip) otherwise.
# Usage: test_apt.sh SOURCE_ROOT
set -euo pipefail
src=$1
[ "$(id -u)" -eq 0 ] || { echo "needs root (dpkg --configure)"; exit 77; }
db=$(mktemp -d /tmp/hdqtd-dpkgdb-XXXXXX)
trap 'rm -rf "$db"' EXIT
mkdir -p "$db/updates" "$db/info" "$db/triggers"
cp /var/lib/dpkg/status "$db/status"
touch "$db/available"
pkg=dpkg  # Multi-Arch: no, so one stanza
dpkg-query -s "$pkg" >"$db/updates/0000"
fail=0
# The precondition: this is the state apt refuses.
[ -n "$(ls -A "$db/updates")" ] || { echo "precondition: updates/ is empty"; exit 1; }
if ! HDQT_DPKG_ADMINDIR=$db bash "$src/scripts/deps.sh" >"$db.log" 2>&1; then
	echo "deps.sh failed:"; cat "$db.log"; fail=1
fi
if [ -n "$(ls -A "$db/updates")" ]; then
	echo "deps.sh left dpkg's interrupted update in place: $(ls "$db/updates")"; fail=1
fi
grep -q "dpkg --configure -a" "$db.log" || { echo "deps.sh did not say it repaired dpkg"; fail=1; }
cmp -s "$db/status" /var/lib/dpkg/status || { echo "the status of the copy changed"; fail=1; }
# Nothing to do on a clean database: no repair, no message.
if ! HDQT_DPKG_ADMINDIR=$db bash "$src/scripts/deps.sh" >"$db.log" 2>&1 || grep -q "interrupted" "$db.log"; then
	echo "deps.sh on a clean database:"; cat "$db.log"; fail=1
fi
rm -f "$db.log"
exit $fail
