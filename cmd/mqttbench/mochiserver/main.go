// Command mochiserver runs mochi-mqtt/server v2 standalone, with its
// default options, a TCP and a WebSocket listener and every client allowed:
// the "mochi alone" column of docs/PERFORMANCE.md, beside caddy-mqtt (which
// embeds the same mochi version) and mosquitto.
//
//	mochiserver --tcp 127.0.0.1:1883 --ws 127.0.0.1:1882 [--pprof 127.0.0.1:6060]
//
// With --pprof it serves Go's profiles (/debug/pprof/) on that address, as
// Caddy's admin endpoint does for caddy-mqtt, so the two can be profiled
// under the same load.
package main

import (
	"flag"
	"log"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	tcp := flag.String("tcp", "127.0.0.1:1883", "TCP listener address")
	ws := flag.String("ws", "127.0.0.1:1882", "WebSocket listener address (any path)")
	pprof := flag.String("pprof", "", "address to serve /debug/pprof/ on (none by default)")
	flag.Parse()
	if *pprof != "" {
		go func() { log.Fatal(http.ListenAndServe(*pprof, nil)) }()
	}

	// Tens of thousands of idle connections need more than the default
	// soft limit of open files.
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}

	srv := mqtt.New(&mqtt.Options{
		InlineClient: false,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		log.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *tcp})); err != nil {
		log.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: *ws})); err != nil {
		log.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	_ = srv.Close()
}
