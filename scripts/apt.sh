# SPDX-License-Identifier: MIT
# Sourced by the scripts that install Debian packages (deps.sh, arm.sh,
# deb.sh, bench.sh): one way to install them on a machine that may not be
# in a clean state.  Root only; the callers check.
#
# A fresh machine can come up with dpkg's last run cut short (a machine
# imaged or stopped mid-install): apt then refuses every install with
# "dpkg was interrupted, you must manually run 'dpkg --configure -a'" and
# the test command died after 4 s on such a machine.  dpkg leaves its
# unfinished status updates in <admindir>/updates; finishing them is what
# apt asks for, and is a no-op otherwise.  An apt or dpkg that still runs
# at boot (unattended upgrades) holds the lock: wait for it, bounded.

HDQT_APT_LOCK_WAIT=${HDQT_APT_LOCK_WAIT:-300}   # seconds

# Finish an interrupted dpkg run, if any.  Returns dpkg's status (callers
# go on either way: a package whose maintainer script keeps failing must
# not stop a machine that needs nothing installed; an install that dpkg's
# state refuses fails on its own, with apt's message).  dpkg has no lock
# timeout of its own: a held lock is retried every 5 s, up to
# HDQT_APT_LOCK_WAIT.  HDQT_DPKG_ADMINDIR names another dpkg database
# (tests/test_apt.sh works on a copy, never on the machine's own).
apt_repair() {
	local admindir=${HDQT_DPKG_ADMINDIR:-/var/lib/dpkg} states out waited=0
	# Unfinished status updates, or packages left unpacked, half-configured
	# or waiting for triggers: what `dpkg --configure -a` finishes.  (The
	# states are read whole: a grep -q that stops early would SIGPIPE
	# dpkg-query, and pipefail would call that "none".)
	states=$(dpkg-query --admindir="$admindir" -W -f='${db:Status-Abbrev}\n' 2>/dev/null |
		cut -c2 | sort -u | tr -d '\n') || true
	if [ -z "$(ls -A "$admindir/updates" 2>/dev/null)" ] && [[ $states != *[UFWt]* ]]; then
		return 0
	fi
	echo "hdqtd: dpkg was interrupted on this machine: dpkg --configure -a" >&2
	while :; do
		if out=$(DEBIAN_FRONTEND=noninteractive dpkg --admindir="$admindir" --configure -a 2>&1); then
			[ -z "$out" ] || printf '%s\n' "$out" >&2
			return 0
		fi
		case $out in
		*lock*)
			if [ "$waited" -lt "$HDQT_APT_LOCK_WAIT" ]; then
				sleep 5
				waited=$((waited + 5))
				continue
			fi ;;
		esac
		printf '%s\n' "$out" >&2
		echo "hdqtd: dpkg --configure -a failed" >&2
		return 1
	done
}

# apt-get with the lock waited for and no questions.
apt_get() {
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$HDQT_APT_LOCK_WAIT" "$@"
}

# apt_install PKG...: update the lists and install, quietly.  A failed
# install is retried once after repairing dpkg and fixing broken
# dependencies (apt-get -f install); the second failure is printed in full.
apt_install() {
	apt_repair || true
	apt_get update -qq || apt_get update -qq || return
	if apt_get install -y -qq --no-install-recommends "$@" >/dev/null; then
		return 0
	fi
	echo "hdqtd: apt-get install failed; repairing dpkg and retrying once" >&2
	apt_repair || true
	apt_get install -y -qq -f >/dev/null || true
	apt_get install -y --no-install-recommends "$@"
}
