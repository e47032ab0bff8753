// Command base is Caddy with caddy-mqtt , to measure the binary size delta.
package main

import (
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-mqtt/caddy-mqtt"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {

	_ = os.Args
	caddycmd.Main()
}
