// Package caddymqttplugin is what `xcaddy build --with
// github.com/caddy-mqtt/caddy-mqtt` plugs into Caddy: the mqtt app, its
// WebSocket handler, its web page, its layer4 handler and matcher, and caddy-l4 itself
// (the layer4 app the TCP and TLS doors need).
package caddymqttplugin

import (
	// The mqtt app, http.handlers.mqtt and the Caddyfile syntax.
	_ "github.com/caddy-mqtt/caddy-mqtt/caddymqtt"
	// http.handlers.mqtt_dashboard, the web page.
	_ "github.com/caddy-mqtt/caddy-mqtt/caddymqtt/dashboard"
	// layer4.handlers.mqtt and layer4.matchers.mqtt.
	_ "github.com/caddy-mqtt/caddy-mqtt/layer4"
	// The layer4 app with all its handlers and matchers (tls, proxy_protocol...).
	_ "github.com/mholt/caddy-l4"
)
