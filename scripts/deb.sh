#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Debian packages (debian/), end to end as a box would get them:
#   1. build them with `dpkg-buildpackage -us -uc -b` in a scratch copy of
#      the tree (/tmp; nothing is written into the source tree but build-deb/);
#   2. lintian: no error and no warning (pedantic and info tags are shown);
#   3. what each package holds (dpkg -c), its conffiles and dependencies;
#   4. `apt-get install ./build-deb/*.deb` (on this machine systemd need not
#      be PID 1: the maintainer scripts must work without it), then the
#      installed tools, the service user, the state directory, the units and
#      their enablement, the -dev package (pkg-config builds the client
#      example) and the Python module; the installed daemon serves one
#      request as user hdqtd; an upgrade (the package repacked as a newer
#      version with a new default config) keeps the edited conffile and
#      the database;
#   5. `apt-get remove` keeps the configuration and the database;
#      `apt-get purge`, and nothing of the packages is left.
# Prints one PASS/FAIL line per check and a closing PASS or FAIL; exits
# non-zero on any failure.  Each check is also logged as a line of
# build-deb/testlog.json (meson's format), which scripts/test.sh counts.
# Needs root (apt-get, dpkg).  Installs its build tools and the package's
# Build-Depends when missing.
#
# The build runs what the recipe's dh_auto_test runs, as a Debian buildd
# would: meson suite 'unit' (under a second; debian/rules says why not
# more: scripts/test.sh, which calls this script, has run every suite on
# the same sources).  `scripts/deb.sh --nocheck` skips even that
# (DEB_BUILD_OPTIONS=nocheck, and check/libsubunit-dev are not needed).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh
src=$PWD
out=$src/build-deb
t0=$(date +%s)

profile=
case "${1:-}" in
--nocheck) profile=nocheck ;;
"") ;;
*) echo "usage: scripts/deb.sh [--nocheck]" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
	# Logged as skipped (scripts/test.sh's closing line counts it), not passed.
	echo "deb: SKIP: needs root (it installs and purges the packages)" >&2
	mkdir -p "$out" && echo '{"name": "deb", "result": "SKIP"}' >"$out/testlog.json"
	exit 0
fi

PACKAGES=(hdqtd hdqtd-clients libhdqt-client0 libhdqt-client-dev python3-hdqt-client)
for p in "${PACKAGES[@]}"; do
	if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
		echo "deb: $p is already installed here; this test installs and purges the packages" >&2
		echo "     (purge deletes /var/lib/hdqtd): remove it first (apt-get purge $p)" >&2
		exit 1
	fi
done

rm -rf "$out"
mkdir -p "$out"
log=$out/testlog.json
: >"$log"
failures=0
record() { # record NAME OK|FAIL [detail]
	local name=$1 res=$2 detail=${3:-}
	printf '{"name": "deb-%s", "result": "%s"}\n' "$name" "$res" >>"$log"
	if [ "$res" = OK ]; then
		echo "PASS: $name"
	else
		echo "FAIL: $name${detail:+: $detail}"
		failures=$((failures + 1))
	fi
}
check() { # check NAME COMMAND...: record whether COMMAND succeeds
	local name=$1; shift
	local o
	if o=$("$@" 2>&1); then record "$name" OK; else record "$name" FAIL "$(echo "$o" | tail -5)"; fi
}

# ---- 1. build tools, Build-Depends, build --------------------------------------
export DEBIAN_FRONTEND=noninteractive
apt_repair || true  # an interrupted dpkg refuses the installs below
TOOLS=(build-essential dpkg-dev debhelper dh-python devscripts fakeroot lintian python3-all
       pkg-config util-linux)
missing=()
for p in "${TOOLS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deb: installing ${missing[*]}" >&2
	apt_install "${missing[@]}"
fi
if ! dpkg-checkbuilddeps ${profile:+-P$profile} >/dev/null 2>&1; then
	echo "deb: installing the Build-Depends of debian/control" >&2
	apt_get build-dep -y -qq --no-install-recommends ${profile:+-P$profile} ./ >/dev/null
fi

version=$(dpkg-parsechangelog -S Version)
meson_version=$(sed -n "s/^ *version : '\([^']*\)'.*/\1/p" meson.build | head -1)
check "changelog-version-is-meson-version" test "$version" = "$meson_version"

# The packages dpkg still knows (installed, or removed with their conffiles
# left): apt-get refuses a purge that names a package it does not know.
present() {
	local p
	for p in "${PACKAGES[@]}"; do
		case $(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) in
		ii* | rc* | i* | r*) echo "$p" ;;
		esac
	done
}
scratch=$(mktemp -d /tmp/hdqtd-deb-XXXXXX)
installed=0
cleanup() {
	if [ $installed -eq 1 ]; then
		# shellcheck disable=SC2046
		apt-get purge -y -qq $(present) >/dev/null 2>&1 || true
	fi
	rm -rf "$scratch"
}
trap cleanup EXIT

# The tree as git has it (tracked files and untracked ones not ignored, so
# uncommitted work is packaged too); without git, everything but build trees.
tree=$scratch/hdqtd-$version
mkdir -p "$tree"
if git rev-parse --git-dir >/dev/null 2>&1; then
	git ls-files -z -co --exclude-standard | xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar -cf - --null -T - | tar -xf - -C "$tree"
else
	tar -cf - --exclude='./build*' --exclude=./state --exclude=./tests/node/node_modules . | tar -xf - -C "$tree"
fi

echo "== dpkg-buildpackage -us -uc -b (DEB_BUILD_OPTIONS=${profile:+$profile }parallel=2) =="
tb=$(date +%s)
if (cd "$tree" && env DEB_BUILD_OPTIONS="${profile:+$profile }parallel=2" ${profile:+DEB_BUILD_PROFILES=$profile} \
	dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1; then
	record "dpkg-buildpackage" OK
else
	record "dpkg-buildpackage" FAIL "see $out/build.log"
	tail -30 "$out/build.log"
	echo "deb: FAIL (the packages did not build)"
	exit 1
fi
echo "   built in $(($(date +%s) - tb)) s"
# build-deb/: the packages a box installs (apt-get install ./*.deb);
# build-deb/extra/: the whole upload (.changes, .buildinfo, every .deb with
# the -dbgsym ones), as lintian and dput read it.
mkdir -p "$out/extra"
cp "$scratch"/*.changes "$scratch"/*.buildinfo "$scratch"/*.deb "$out/extra/"
for f in "$scratch"/*.deb; do
	case $f in *-dbgsym_*) ;; *) cp "$f" "$out/" ;; esac
done
ls "$out"/*.deb | sed "s|^$src/|   |"
for p in "${PACKAGES[@]}"; do
	check "built-$p" compgen -G "$out/${p}_${version}_*.deb"
done

# ---- 2. lintian ----------------------------------------------------------------
echo "== lintian --pedantic (fails on E: and W:) =="
lint_rc=0
lint=$(lintian --pedantic --display-info --show-overrides --fail-on error,warning \
	"$out"/extra/hdqtd_"${version}"_*.changes 2>&1) || lint_rc=$?
lint=$(grep -v 'running with root privileges' <<<"$lint" || true)
[ -n "$lint" ] && echo "$lint" | sed 's/^/   /'
if [ $lint_rc -ne 0 ] || grep -q '^[EW]: ' <<<"$lint" || grep -q 'No packages selected\|^Skipping' <<<"$lint"; then
	record "lintian" FAIL "exit $lint_rc, $(grep -c '^[EW]: ' <<<"$lint") errors or warnings"
else
	record "lintian" OK
fi

# ---- 3. contents -----------------------------------------------------------------
echo "== contents =="
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
deb_of() { compgen -G "$out/${1}_${version}_*.deb" | head -1; }
files_of() { dpkg-deb -c "$(deb_of "$1")" | awk '{print $6}' | sed 's|^\./|/|'; }
has() { # has PACKAGE PATH...
	local p=$1; shift
	local list f miss=()
	list=$(files_of "$p")
	for f; do grep -qx -- "$f" <<<"$list" || miss+=("$f"); done
	[ ${#miss[@]} -eq 0 ] || { echo "$p lacks: ${miss[*]}"; return 1; }
}
hasnt() { # hasnt PACKAGE REGEX: no path of PACKAGE matches
	local bad
	bad=$(files_of "$1" | grep -E -- "$2" || true)
	[ -z "$bad" ] || { echo "$1 has: $bad"; return 1; }
}
check "contents-hdqtd" has hdqtd /usr/sbin/hdqtd /etc/hdqtd/hdqtd.conf \
	/lib/systemd/system/hdqtd.service /lib/systemd/system/hdqtd.socket \
	/usr/lib/sysusers.d/hdqtd.conf /usr/lib/tmpfiles.d/hdqtd.conf \
	/usr/share/man/man8/hdqtd.8.gz /usr/share/man/man5/hdqtd.conf.5.gz \
	/usr/share/doc/hdqtd/copyright /usr/share/doc/hdqtd/PROTOCOL.md.gz \
	/usr/share/doc/hdqtd/operator-guide.md.gz
check "contents-hdqtd-only-daemon" hasnt hdqtd '^/usr/bin/|\.so(\.|$)|^/usr/include|python|^/usr/lib/systemd/'
check "contents-hdqtd-clients" has hdqtd-clients /usr/bin/hdqtctl /usr/bin/hdqt-sensor \
	/usr/bin/hdqt-eval /usr/bin/hdqt-bench /usr/share/man/man1/hdqtctl.1.gz \
	/usr/share/man/man1/hdqt-sensor.1.gz /usr/share/man/man1/hdqt-eval.1.gz \
	/usr/share/man/man1/hdqt-bench.1.gz
check "contents-hdqtd-clients-only-tools" hasnt hdqtd-clients '^/usr/sbin/|^/etc/|^/lib/|\.so(\.|$)|^/usr/include'
check "contents-libhdqt-client0" has libhdqt-client0 "/usr/lib/$ma/libhdqt-client.so.0" \
	"/usr/lib/$ma/libhdqt-client.so.0.1.0"
check "contents-libhdqt-client0-runtime-only" hasnt libhdqt-client0 '\.so$|^/usr/include|\.pc$|/bin/'
check "contents-libhdqt-client-dev" has libhdqt-client-dev /usr/include/hdqt/hdqt_client.h \
	"/usr/lib/$ma/libhdqt-client.so" "/usr/lib/$ma/pkgconfig/libhdqt-client.pc"
check "contents-python3-hdqt-client" has python3-hdqt-client \
	/usr/lib/python3/dist-packages/hdqt_client.py \
	/usr/share/doc/python3-hdqt-client/examples/example.py
check "contents-python3-hdqt-client-only-module" hasnt python3-hdqt-client '\.pyc$|/bin/|^/usr/share/hdqtd'
check "conffile-hdqtd.conf" sh -c "dpkg-deb -I '$(deb_of hdqtd)' conffiles | grep -qx /etc/hdqtd/hdqtd.conf"
check "depends-clients-on-library" sh -c "dpkg-deb -f '$(deb_of hdqtd-clients)' Depends | grep -q 'libhdqt-client0 (>= $version)'"
check "depends-dev-on-library" sh -c "dpkg-deb -f '$(deb_of libhdqt-client-dev)' Depends | grep -q 'libhdqt-client0 (= $version)'"
check "depends-python3" sh -c "dpkg-deb -f '$(deb_of python3-hdqt-client)' Depends | grep -q python3"
# What systemd does on install and upgrade (cannot run here when systemd is
# not PID 1): start the socket only; try-restart the service after an upgrade,
# never a plain start; nothing stopped before the upgrade (no preinst stop).
ctl_of() { dpkg-deb -I "$(deb_of hdqtd)" "$1" 2>/dev/null || true; }
unit_actions() {
	local pi pre
	pi=$(ctl_of postinst) pre=$(ctl_of preinst)
	grep -q "deb-systemd-invoke start 'hdqtd.socket'" <<<"$pi" || { echo "postinst does not start hdqtd.socket"; return 1; }
	if grep -Eq 'deb-systemd-invoke (start|restart|\$_dh_action) .*hdqtd\.service' <<<"$pi"; then
		echo "postinst starts hdqtd.service"; return 1
	fi
	grep -q "deb-systemd-invoke try-restart .*'hdqtd.service'" <<<"$pi" || { echo "postinst does not try-restart hdqtd.service"; return 1; }
	if grep -q 'deb-systemd-invoke stop' <<<"$pre"; then echo "preinst stops units before the upgrade"; return 1; fi
}
check "maintainer-scripts-unit-actions" unit_actions
check "library-exports-client-api-only" sh -c "dpkg-deb --fsys-tarfile '$(deb_of libhdqt-client0)' |
	tar -xO ./usr/lib/$ma/libhdqt-client.so.0.1.0 >'$scratch/lib.so' &&
	nm -D --defined-only '$scratch/lib.so' | awk '{print \$3}' | grep -v '^hdqt_client_' | grep -q . && exit 1 || exit 0"

# ---- 4. install as on a box --------------------------------------------------------
echo "== apt-get install ./build-deb/*.deb (systemd is $( [ -d /run/systemd/system ] && echo || echo 'not ')PID 1 here) =="
getent passwd hdqtd >/dev/null && had_user=1 || had_user=0
installed=1
if (cd "$out" && apt_get install -y --no-install-recommends ./*.deb) >"$out/install.log" 2>&1; then
	record "apt-get-install" OK
else
	record "apt-get-install" FAIL "see $out/install.log"
	tail -20 "$out/install.log"
fi
check "installed-hdqtd-version" sh -c "hdqtd --version | grep -q '^hdqtd $version '"
hdqtd --version | sed 's/^/   /' || true
check "installed-hdqtctl-help" sh -c 'hdqtctl --help >/dev/null'
check "installed-config-checks" hdqtd --config /etc/hdqtd/hdqtd.conf --check-config
[ $had_user -eq 1 ] && echo "   (user hdqtd existed before the installation)"
check "user-hdqtd" sh -c 'getent passwd hdqtd | awk -F: "\$6 == \"/var/lib/hdqtd\" && \$7 ~ /nologin\$/ && \$3 < 1000 {ok=1} END {exit !ok}"'
check "group-hdqtd" getent group hdqtd
check "state-directory" sh -c '[ "$(stat -c %U:%G:%a /var/lib/hdqtd)" = hdqtd:hdqtd:750 ]'
check "unit-files" sh -c 'test -f /lib/systemd/system/hdqtd.service && test -f /lib/systemd/system/hdqtd.socket &&
	grep -qx "ExecStart=/usr/sbin/hdqtd --config /etc/hdqtd/hdqtd.conf" /lib/systemd/system/hdqtd.service'
# The socket is enabled, the service (started by its socket) is not.
check "socket-enabled" test -L /etc/systemd/system/sockets.target.wants/hdqtd.socket
check "service-not-enabled" test ! -e /etc/systemd/system/multi-user.target.wants/hdqtd.service
check "python-module" /usr/bin/python3 -c 'import hdqt_client; assert hdqt_client.default_socket() == "/run/hdqtd/hdqtd.sock"'
# The -dev package: pkg-config finds the library and header, the client
# example builds, links and runs (and finds no daemon on a bogus socket).
# pkg-config needs every module of Requires and Requires.private even for
# --cflags: the -dev package must depend on the package of each .pc file.
pc_requires_met() {
	local m pc owner deps bad=()
	deps=$(dpkg-query -W -f='${Depends}' libhdqt-client-dev)
	for m in $(pkg-config --print-requires --print-requires-private libhdqt-client | awk '{print $1}'); do
		pc=$(pkg-config --variable=pcfiledir "$m")/$m.pc
		owner=$(dpkg -S "$(readlink -f "$pc")" 2>/dev/null | head -1 | cut -d: -f1)
		grep -Eq "(^|, )${owner:-none}( |,|$)" <<<"$deps" || bad+=("$m (${owner:-no package})")
	done
	[ ${#bad[@]} -eq 0 ] || { echo "libhdqt-client-dev does not depend on the packages of: ${bad[*]}"; return 1; }
}
check "dev-depends-cover-pc-requires" pc_requires_met
check "dev-pkg-config-builds-example" sh -c "cc clients/examples/predict.c \$(pkg-config --cflags --libs libhdqt-client) -o '$scratch/example' &&
	{ HDQTD_SOCKET=/nonexistent '$scratch/example' >/dev/null 2>&1; [ \$? -ne 0 ]; } &&
	ldd '$scratch/example' | grep -q 'libhdqt-client.so.0 => .*/lib/$ma/libhdqt-client.so.0'"

# The installed daemon as its service user, on a private socket and the
# packaged state directory's database (what the unit runs, minus systemd).
serve() {
	local d
	d=$(mktemp -d /tmp/hdqtd-run-XXXXXX) && chown hdqtd:hdqtd "$d"
	setpriv --reuid=hdqtd --regid=hdqtd --init-groups \
		hdqtd --config /etc/hdqtd/hdqtd.conf --socket "$d/hdqtd.sock" --db /var/lib/hdqtd/hdqtd.db \
		>"$out/hdqtd.log" 2>&1 &
	local pid=$! _i
	for _i in $(seq 100); do [ -S "$d/hdqtd.sock" ] && break; sleep 0.1; done
	local rc=0
	hdqtctl --socket "$d/hdqtd.sock" status >/dev/null || rc=1
	/usr/bin/python3 -c "import sys, hdqt_client
with hdqt_client.Client(sys.argv[1]) as c: c.status()" "$d/hdqtd.sock" || rc=1
	kill -TERM $pid && wait $pid || rc=1
	[ -f /var/lib/hdqtd/hdqtd.db ] || rc=1
	rm -rf "$d"
	return $rc
}
check "installed-daemon-serves-as-hdqtd" serve

# An upgrade: the same hdqtd package repacked as version VERSION+upgradetest
# with a changed default hdqtd.conf (dpkg-deb, no second build), installed
# as a fleet would (--force-confdef --force-confold): the maintainer
# scripts' upgrade path runs, the locally edited conffile stays, the new
# default lands beside it as hdqtd.conf.dpkg-dist, the database is untouched.
echo "# local edit" >>/etc/hdqtd/hdqtd.conf
db_sum=$(sha256sum /var/lib/hdqtd/hdqtd.db 2>/dev/null | cut -d' ' -f1)
new=$version+upgradetest
repack() {
	local r=$scratch/repack
	dpkg-deb -R "$(deb_of hdqtd)" "$r" &&
		sed -i "s/^Version: .*/Version: $new/" "$r/DEBIAN/control" &&
		echo "# a new default in $new" >>"$r/etc/hdqtd/hdqtd.conf" &&
		dpkg-deb -b --root-owner-group "$r" "$scratch/hdqtd_${new}_upgrade.deb" >/dev/null
}
check "upgrade-repack" repack
check "upgrade" sh -c "apt-get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	'$scratch/hdqtd_${new}_upgrade.deb' >'$out/upgrade.log' 2>&1"
check "upgrade-version" sh -c "[ \"\$(dpkg-query -W -f='\${Version}' hdqtd)\" = '$new' ]"
check "upgrade-keeps-edited-conffile" sh -c "grep -qx '# local edit' /etc/hdqtd/hdqtd.conf &&
	! grep -q 'a new default' /etc/hdqtd/hdqtd.conf && grep -qx '# a new default in $new' /etc/hdqtd/hdqtd.conf.dpkg-dist"
check "upgrade-keeps-database" sh -c "[ -n '$db_sum' ] && [ \"\$(sha256sum /var/lib/hdqtd/hdqtd.db | cut -d' ' -f1)\" = '$db_sum' ]"
check "upgraded-daemon-runs" hdqtd --config /etc/hdqtd/hdqtd.conf --check-config

# ---- 5. remove, then purge -----------------------------------------------------------
echo "== apt-get remove, apt-get purge =="
# remove keeps the configuration and the database (for a reinstallation).
check "apt-get-remove" sh -c "apt-get remove -y ${PACKAGES[*]} >'$out/remove.log' 2>&1"
check "remove-keeps-conffile-and-database" sh -c "test ! -e /usr/sbin/hdqtd && grep -qx '# local edit' /etc/hdqtd/hdqtd.conf &&
	test -f /var/lib/hdqtd/hdqtd.db && dpkg-query -W -f='\${Status}' hdqtd | grep -q config-files"
to_purge=$(present | tr '\n' ' ')
echo "   purging: $to_purge"
check "apt-get-purge" sh -c "apt-get purge -y $to_purge >'$out/purge.log' 2>&1"
installed=0
gone() {
	local p f left=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed\|config-files' && left+=("package $p")
	done
	for f in /usr/sbin/hdqtd /usr/bin/hdqtctl /etc/hdqtd /var/lib/hdqtd \
		/lib/systemd/system/hdqtd.service /lib/systemd/system/hdqtd.socket \
		/etc/systemd/system/sockets.target.wants/hdqtd.socket /usr/lib/sysusers.d/hdqtd.conf \
		/usr/lib/python3/dist-packages/hdqt_client.py /usr/include/hdqt "/usr/lib/$ma/libhdqt-client.so.0"; do
		[ -e "$f" ] || [ -L "$f" ] && left+=("$f")
	done
	compgen -G '/usr/lib/python3/dist-packages/__pycache__/hdqt_client*' >/dev/null && left+=(hdqt_client.pyc)
	[ ${#left[@]} -eq 0 ] || { echo "left after purge: ${left[*]}"; return 1; }
}
check "purge-removes-everything" gone
# Debian practice: the system user stays after purge (files it owned may remain).
getent passwd hdqtd >/dev/null && echo "   (user hdqtd kept after purge, as Debian packages do)"

secs=$(($(date +%s) - t0))
n=$(wc -l <"$log")
if [ $failures -eq 0 ]; then
	echo "deb: PASS ($n checks, ${secs} s; packages in build-deb/)"
else
	echo "deb: FAIL ($failures of $n checks failed, ${secs} s)"
	exit 1
fi
