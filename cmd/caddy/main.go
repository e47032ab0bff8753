// Command caddy is Caddy with caddy-mqtt plugged in, the same program
// `./xcaddy.sh build` produces. The integration tests build it with `go build`
// so they always test this checkout.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-mqtt/caddy-mqtt"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
