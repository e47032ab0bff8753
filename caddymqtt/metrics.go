package caddymqtt

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// registerMetrics puts the broker's metrics into this config's registry, so
// they appear on the admin endpoint's /metrics and through the metrics
// handler. Each config load has a fresh registry, and the collector reads
// the pooled broker's counters, which live across reloads: the series keep
// counting and nothing is registered twice.
func (a *App) registerMetrics(ctx caddy.Context) error {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return nil
	}
	return reg.Register(broker.NewCollector(a.shared.current))
}

// current is the broker if it has been started, else nil: scraping metrics
// never starts one.
func (s *sharedBroker) current() *broker.Broker { return s.live.Load() }
