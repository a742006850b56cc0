#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# meson install into a DESTDIR: the tree a Debian system expects, units that
# systemd-analyze verifies and rates at most 1.0 for exposure, a pkg-config
# file that builds the client example, man pages that render.
# Usage: test_install.sh BUILDDIR PREFIX SBINDIR BINDIR SYSCONFDIR MANDIR
set -euo pipefail
build=$1 prefix=$2 sbindir=$3 bindir=$4 sysconfdir=$5 mandir=$6
dest=$(mktemp -d /tmp/hdqtd-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >/dev/null
abs() { case "$1" in /*) echo "$1" ;; *) echo "$prefix/$1" ;; esac; }
sbin=$dest$(abs "$sbindir") bin=$dest$(abs "$bindir") etc=$dest$(abs "$sysconfdir")
man=$dest$(abs "$mandir")
fail=0
need() { if [ ! -e "$1" ]; then echo "missing: ${1#"$dest"}"; fail=1; fi; }
need "$sbin/hdqtd"
for b in hdqtctl hdqt-sensor hdqt-eval hdqt-bench; do need "$bin/$b"; done
need "$etc/hdqtd/hdqtd.conf"
for m in man8/hdqtd.8 man1/hdqtctl.1 man1/hdqt-sensor.1 man1/hdqt-eval.1 man1/hdqt-bench.1 \
	man5/hdqtd.conf.5; do need "$man/$m"; done
unit=$(find "$dest" -name hdqtd.service | head -1)
sock=$(find "$dest" -name hdqtd.socket | head -1)
pc=$(find "$dest" -name libhdqt-client.pc | head -1)
[ -n "$unit" ] || { echo "missing: hdqtd.service"; fail=1; }
[ -n "$sock" ] || { echo "missing: hdqtd.socket"; fail=1; }
[ -n "$pc" ] || { echo "missing: libhdqt-client.pc"; fail=1; }
need "$(find "$dest" -path '*sysusers.d/hdqtd.conf' | head -1)"
need "$(find "$dest" -name hdqt_client.h | head -1)"
need "$(find "$dest" -name PROTOCOL.md | head -1)"
[ $fail -eq 0 ] || exit 1

# The unit runs the installed daemon with the installed configuration.
grep -qx "ExecStart=$(abs "$sbindir")/hdqtd --config $(abs "$sysconfdir")/hdqtd/hdqtd.conf" "$unit" \
	|| { echo "ExecStart does not name the installed paths:"; grep ExecStart "$unit"; exit 1; }
"$sbin/hdqtd" --config "$etc/hdqtd/hdqtd.conf" --check-config >/dev/null

# systemd-analyze: verify (with ExecStart pointed at the DESTDIR copy) and
# the exposure score.
if command -v systemd-analyze >/dev/null; then
	v=$(mktemp -d /tmp/hdqtd-units-XXXXXX)
	sed "s|^ExecStart=[^ ]*|ExecStart=$sbin/hdqtd|" "$unit" >"$v/hdqtd.service"
	cp "$sock" "$v/hdqtd.socket"
	if ! out=$(systemd-analyze verify --man=no "$v/hdqtd.service" "$v/hdqtd.socket" 2>&1); then
		echo "systemd-analyze verify failed:"; echo "$out"; rm -rf "$v"; exit 1
	fi
	[ -z "$out" ] || { echo "systemd-analyze verify warned:"; echo "$out"; rm -rf "$v"; exit 1; }
	score=$(systemd-analyze security --offline=yes "$v/hdqtd.service" 2>&1 |
		sed -n 's/.*Overall exposure level for hdqtd.service: \([0-9.]*\).*/\1/p')
	rm -rf "$v"
	echo "exposure: $score"
	awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.0) }' \
		|| { echo "exposure $score > 1.0"; exit 1; }
	grep -q '^Type=notify' "$unit" && grep -q '^WatchdogSec=' "$unit" \
		&& grep -q '^ListenStream=/run/hdqtd/hdqtd.sock' "$sock" \
		&& ! grep -q '^RuntimeDirectory=' "$unit" \
		|| { echo "unit lacks Type=notify/WatchdogSec/ListenStream or has RuntimeDirectory="; exit 1; }
else
	echo "systemd-analyze not installed (scripts/deps.sh installs systemd)"; exit 1
fi

# The metrics service + timer (installed, not enabled) verify too, and the
# script they run is installed executable.
mu=$(find "$dest" -name hdqtd-metrics.service | head -1)
mt=$(find "$dest" -name hdqtd-metrics.timer | head -1)
ms=$(find "$dest" -path '*/hdqtd/hdqtd-metrics' | head -1)
{ [ -n "$mu" ] && [ -n "$mt" ] && [ -x "$ms" ]; } \
	|| { echo "missing: hdqtd-metrics.service, hdqtd-metrics.timer or its script"; exit 1; }
grep -q "^ExecStart=/bin/sh ${ms#"$dest"} /var/lib/prometheus/node-exporter/hdqtd.prom$" "$mu" \
	|| { echo "hdqtd-metrics.service does not run the installed script:"; grep ExecStart "$mu"; exit 1; }
! grep -q '^WantedBy' "$mu" || { echo "hdqtd-metrics.service must be started by its timer"; exit 1; }
v=$(mktemp -d /tmp/hdqtd-units-XXXXXX)
cp "$mu" "$mt" "$v/"
if ! out=$(systemd-analyze verify --man=no "$v/hdqtd-metrics.service" "$v/hdqtd-metrics.timer" 2>&1) \
	|| [ -n "$out" ]; then
	echo "systemd-analyze verify (metrics units):"; echo "$out"; rm -rf "$v"; exit 1
fi
rm -rf "$v"

# The pkg-config file builds and links the client example against the tree.
pcdir=$(dirname "$pc")
cflags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$dest$prefix" --cflags libhdqt-client)
libs=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$dest$prefix" --libs libhdqt-client)
src=$(dirname "$0")/../clients/examples/predict.c
cc "$src" $cflags $libs -o "$dest/example"
LD_LIBRARY_PATH=$(dirname "$(find "$dest" -name 'libhdqt-client.so.0' | head -1)") \
	HDQTD_SOCKET=/nonexistent "$dest/example" >/dev/null 2>&1 && { echo "example connected to nothing?"; exit 1; }

# Man pages render without warnings.
for m in "$man"/man*/hdqt*; do
	w=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$m" 2>&1 >/dev/null || true)
	[ -z "$w" ] || { echo "$m: $w"; exit 1; }
done
echo "install tree OK"
