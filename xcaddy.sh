#!/usr/bin/env bash
# Builds Caddy with caddy-mqtt from this checkout, runs it, or runs all tests.
#
#   ./xcaddy.sh build [--with <module>[@version] ...]   build ./caddy
#   ./xcaddy.sh run   [caddy run flags]                  build if needed, run the default example
#   ./xcaddy.sh test  [go test flags]                    build, then run every test
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
test)
	build
	export CADDY_BIN="$PWD/caddy"
	go vet ./...
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
	[ -z "$unformatted" ] || { echo "gofmt needed: $unformatted" >&2; exit 1; }
	go test -race -count=1 -timeout 20m "$@" ./...
	if [ -f firmware/Makefile ]; then make -C firmware check check-sim; fi
	;;
*)
	echo "usage: $0 [build|run|test] ..." >&2
	exit 2
	;;
esac
