#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install the Debian packages hdqtd needs to build and test, if any is missing.
# Idempotent: does nothing when everything is present.  As root it runs
# apt-get; otherwise it prints the exact command and fails.
set -euo pipefail
. "$(dirname "$0")/apt.sh"

PKGS=(build-essential meson ninja-build pkg-config
      libuv1-dev libcjson-dev libsimdjson-dev libsqlite3-dev sqlite3 zlib1g-dev
      check libsubunit-dev libkissfft-dev libinih-dev libsystemd-dev
      python3 python3-jsonschema python3-prometheus-client systemd procps man-db strace libopenblas-dev
      clang libclang-rt-14-dev llvm)  # libFuzzer + sanitizer runtimes, llvm-symbolizer (tests/fuzz)

missing=()
for p in "${PKGS[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
# Node.js and npm run the JSON-RPC interoperability test; any Node >= 18
# will do (Debian's or a nodesource build), so only a missing one is added.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

# Finish an interrupted dpkg even when nothing is missing: every later
# apt-get of the test command (scripts/deb.sh installs the built packages)
# would be refused otherwise.  --repair-only stops there (tests/test_apt.sh).
if [ "$(id -u)" -eq 0 ]; then
	apt_repair || true
fi
[ "${1:-}" = --repair-only ] && exit 0
[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "hdqtd: missing Debian packages. Run as root:" >&2
	echo "  apt-get update && $cmd" >&2
	exit 1
fi
echo "hdqtd: installing ${missing[*]}" >&2
apt_install "${missing[@]}"
