#!/usr/bin/env bash
# Builds Caddy with caddy-mqtt from this checkout, runs it, or runs all tests.
#
#   ./xcaddy.sh build [--with <module>[@version] ...]   build ./caddy
#   ./xcaddy.sh run   [caddy run flags]                  build if needed, run the default example
#   ./xcaddy.sh test  [go test flags]                    install what is missing, build, run every test
#   ./xcaddy.sh setup                                    install what the tests need and is missing
#
# Extra plugins (a DNS provider for ACME DNS-01, say) go after `build`, or in
# XCADDY_WITH, e.g. XCADDY_WITH="--with github.com/caddy-dns/cloudflare".
set -euo pipefail
cd "$(dirname "$0")"

XCADDY_VERSION=v0.4.5
CADDY_VERSION=v2.11.9
CADDY_L4_VERSION=v0.1.2
MODULE=github.com/caddy-mqtt/caddy-mqtt
LOCAL_VERSION=v0.0.0-00010101000000-000000000000

build() {
	# xcaddy puts the plugins into a temporary module; -buildvcs=false because
	# that module has no VCS information. The checkout stands in for a fixed
	# pseudo-version of the module: named without a version, xcaddy's `go get`
	# would ask the module proxy for the latest one, which a module that is
	# not published (or this very checkout) does not have.
	GOFLAGS="${GOFLAGS:-} -buildvcs=false" go run "github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION}" \
		build "${CADDY_VERSION}" --output ./caddy \
		--with "${MODULE}@${LOCAL_VERSION}=." \
		--with "github.com/mholt/caddy-l4@${CADDY_L4_VERSION}" \
		${XCADDY_WITH:-} "$@"
	# The list is read whole first: with pipefail, `list-modules | grep -q`
	# fails at random when grep exits before caddy has written everything
	# (SIGPIPE, status 141).
	local modules
	modules=$(./caddy list-modules)
	grep -qx 'layer4.handlers.mqtt' <<<"$modules" || { echo "built caddy lacks caddy-mqtt" >&2; exit 1; }
}

START=$(date +%s)
# step prints a progress line with the time since the start.
step() { printf '== [%4ss] %s\n' "$(($(date +%s) - START))" "$*"; }

# Debian packages the tests use: mosquitto (mosquitto_passwd and a reference
# broker), mosquitto-clients (mosquitto_pub/sub), openssl (the classic
# client-certificate recipe), Node.js for the MQTT.js tests, chromium (the
# web page test's browser, driven by playwright-core; never a downloaded
# browser) and libnss3-tools (certutil, to trust Caddy's internal CA in the
# browser's NSS database). The firmware toolchain comes from
# firmware/ci-deps.sh.
TEST_PACKAGES=(mosquitto mosquitto-clients openssl ca-certificates chromium libnss3-tools)
PEBBLE_VERSION=v2.10.1 # keep in step with integration/acme_test.go
NATS_SERVER_VERSION=v2.15.3

# setup installs what the tests need and is missing: Debian packages (as
# root, or with sudo that needs no password), pebble (go install), MQTT.js
# (npm ci from the lockfile). When it may not install (not root, no
# password-less sudo, XCADDY_NO_INSTALL=1, not Debian), it stops at once and
# prints the command to run.
setup() {
	step "checking test dependencies"
	local missing=() p
	if command -v dpkg-query >/dev/null; then
		for p in "${TEST_PACKAGES[@]}"; do
			dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
		done
		# Node.js may come from elsewhere than Debian (nodesource, nvm).
		command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
		if [ -f firmware/ci-deps.sh ]; then
			# shellcheck disable=SC2207
			missing+=($(firmware/ci-deps.sh --missing))
		fi
	else
		for p in mosquitto mosquitto_pub openssl node npm make g++; do
			command -v "$p" >/dev/null || missing+=("$p")
		done
		if [ "${#missing[@]}" -gt 0 ]; then
			echo "missing: ${missing[*]} (not a Debian system: install them with your package manager)" >&2
			exit 1
		fi
	fi
	if [ "${#missing[@]}" -gt 0 ]; then
		local sudo=""
		if [ "$(id -u)" -ne 0 ]; then
			if [ -z "${XCADDY_NO_INSTALL:-}" ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
				sudo="sudo"
			else
				echo "missing Debian packages: ${missing[*]}" >&2
				echo "run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
				exit 1
			fi
		elif [ -n "${XCADDY_NO_INSTALL:-}" ]; then
			echo "missing Debian packages: ${missing[*]}" >&2
			echo "run: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
			exit 1
		fi
		step "installing Debian packages: ${missing[*]}"
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	# playwright-core (the web page test) needs Node.js 20 or later.
	node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || {
		echo "Node.js $(node --version) is too old: the web page test's playwright-core needs 20 or later" >&2
		exit 1
	}
	local gobin
	gobin="$(go env GOBIN)"
	[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
	export PATH="$PATH:$gobin"
	if ! command -v pebble >/dev/null; then
		step "installing pebble ${PEBBLE_VERSION} (go install, into $gobin)"
		go install "github.com/letsencrypt/pebble/v2/cmd/pebble@${PEBBLE_VERSION}"
	fi
	if ! command -v nats-server >/dev/null; then
		step "installing nats-server ${NATS_SERVER_VERSION} (go install, into $gobin; the cluster tests)"
		go install "github.com/nats-io/nats-server/v2@${NATS_SERVER_VERSION}"
	fi
	# npm ci when the packages are missing or older than the lockfile.
	if [ ! -f integration/js/node_modules/.package-lock.json ] ||
		[ integration/js/package-lock.json -nt integration/js/node_modules/.package-lock.json ]; then
		step "installing MQTT.js and playwright-core (npm ci --prefix integration/js)"
		npm ci --prefix integration/js --no-audit --no-fund --loglevel=error
	fi
}

# stale reports whether ./caddy is older than any Go source or go.mod here,
# or than a file the web page embeds.
stale() {
	[ ! -x ./caddy ] && return 0
	[ -n "$(find . -path ./firmware -prune -o \( -name '*.go' -o -name go.mod -o -name go.sum -o -path './caddymqtt/dashboard/assets/*' \) -newer ./caddy -print -quit)" ]
}

cmd="${1:-run}"
[ $# -gt 0 ] && shift
case "$cmd" in
build)
	build "$@"
	;;
run)
	stale && build
	exec ./caddy run --config caddyfile-examples/Caddyfile --adapter caddyfile "$@"
	;;
setup)
	setup
	;;
test)
	setup
	step "building ./caddy (xcaddy ${XCADDY_VERSION}, Caddy ${CADDY_VERSION})"
	build
	export CADDY_BIN="$PWD/caddy"
	step "go vet"
	go vet ./...
	step "gofmt"
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
	[ -z "$unformatted" ] || { echo "gofmt needed: $unformatted" >&2; exit 1; }
	step "unit tests (-race): every package but ./integration"
	go test -race -count=1 -timeout 20m "$@" $(go list ./... | grep -v '/integration$')
	step "integration tests (-race, the real ./caddy; about 10 minutes): one line per test"
	log="${TMPDIR:-/tmp}/caddy-mqtt-integration.$$.log"
	# The whole -v output goes to the log; the top-level results are shown
	# as they finish, so a long run shows where it is.
	if ! go test -race -count=1 -timeout 20m -v "$@" ./integration/ 2>&1 | tee "$log" |
		grep --line-buffered -E '^(--- (PASS|FAIL|SKIP)|ok |FAIL|panic)'; then
		:
	fi
	if grep -qE '^(FAIL|panic)' "$log"; then
		echo "integration tests failed; the whole output is in $log" >&2
		grep -E -A 30 '^\s*--- FAIL' "$log" | head -200 >&2
		exit 1
	fi
	rm -f "$log"
	if [ -f firmware/Makefile ]; then
		step "firmware: host tests, lx106 cross build under QEMU, simulator"
		make -C firmware check check-sim
	fi
	step "all tests passed"
	;;
*)
	echo "usage: $0 [build|run|setup|test] ..." >&2
	exit 2
	;;
esac
