// Command badger is Caddy with caddy-mqtt and mochi's badger storage hook linked in , to measure the binary size delta.
package main

import (
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/mochi-mqtt/server/v2/hooks/storage/badger"

	_ "github.com/caddy-mqtt/caddy-mqtt"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	if os.Getenv("STORAGEBENCH_NEVER") == "1" { // keeps the store's code reachable
		_ = new(badger.Hook).Init(nil)
	}
	_ = os.Args
	caddycmd.Main()
}
