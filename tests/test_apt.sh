#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/deps.sh on a machine whose last dpkg run was interrupted (the CI
# machine of 2026-12-06: apt refused every install with "dpkg was
# interrupted, you must manually run 'dpkg --configure -a'" and the test
# command stopped after 4 s).  Works on a copy of the dpkg database
# (HDQT_DPKG_ADMINDIR), never on the machine's own, and runs deps.sh with
# --repair-only (it installs nothing, whatever is missing here): an
# unfinished status update of an installed package, as dpkg leaves it in
# <admindir>/updates, must be finished (updates/ empty, the status
# unchanged).  Needs root (dpkg --configure); exit 77 (skip) otherwise.
# Usage: test_apt.sh SOURCE_ROOT
set -euo pipefail
src=$1
[ "$(id -u)" -eq 0 ] || { echo "needs root (dpkg --configure)"; exit 77; }
# dpkg --admindir still works on the real root: a copy holding packages
# that are unpacked, half-configured or awaiting triggers would have
# --configure -a run their maintainer scripts here.  Only a clean
# database is copied.
states=$(dpkg-query -W -f='${db:Status-Abbrev}\n' | cut -c2 | sort -u | tr -d '\n')
if [[ $states == *[UFWtH]* ]] || [ -n "$(ls -A /var/lib/dpkg/updates)" ]; then
	echo "this machine's dpkg has unfinished work (states '$states'): not copied"
	exit 77
fi
tmp=$(mktemp -d /tmp/hdqtd-dpkgdb-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
db=$tmp/db log=$tmp/log
mkdir -p "$db/updates" "$db/info" "$db/triggers"
for f in status arch diversions statoverride; do
	[ ! -e "/var/lib/dpkg/$f" ] || cp "/var/lib/dpkg/$f" "$db/$f"
done
touch "$db/available"
dpkg-query -s dpkg >"$db/updates/0000" # Multi-Arch: no, so one stanza
fail=0
[ -n "$(ls -A "$db/updates")" ] || { echo "precondition: updates/ is empty"; exit 1; }
if ! HDQT_DPKG_ADMINDIR=$db bash "$src/scripts/deps.sh" --repair-only >"$log" 2>&1; then
	echo "deps.sh failed:"; cat "$log"; fail=1
fi
if [ -n "$(ls -A "$db/updates")" ]; then
	echo "deps.sh left dpkg's interrupted update in place: $(ls "$db/updates")"; fail=1
fi
grep -q "dpkg --configure -a" "$log" || { echo "deps.sh did not say it repaired dpkg"; fail=1; }
cmp -s "$db/status" /var/lib/dpkg/status || { echo "the status of the copy changed"; fail=1; }
# Nothing to do on a clean database: no repair, no message.
if ! HDQT_DPKG_ADMINDIR=$db bash "$src/scripts/deps.sh" --repair-only >"$log" 2>&1 ||
	grep -q "interrupted" "$log"; then
	echo "deps.sh on a clean database:"; cat "$log"; fail=1
fi
exit $fail
