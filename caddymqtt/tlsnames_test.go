package caddymqtt

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

func TestTLSNamesCaddyfile(t *testing.T) {
	app, err := parseGlobal(t, `mqtt {
		tls_names mqtt.example.com localhost
		tls_names 192.168.1.10
	}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"mqtt.example.com", "localhost", "192.168.1.10"}
	if !reflect.DeepEqual(app.TLSNames, want) {
		t.Fatalf("tls_names = %v, want %v", app.TLSNames, want)
	}
	js, _ := json.Marshal(app)
	if !strings.Contains(string(js), `"tls_names":["mqtt.example.com","localhost","192.168.1.10"]`) {
		t.Errorf("JSON %s lacks tls_names", js)
	}
	if _, err := parseGlobal(t, "mqtt {\n tls_names\n}"); err == nil {
		t.Error("tls_names without names accepted")
	}
}

func TestNormalizeTLSNames(t *testing.T) {
	got, err := normalizeTLSNames([]string{"MQTT.Example.com", "mqtt.example.com", "*.example.com", "[::1]", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"mqtt.example.com", "*.example.com", "::1", "127.0.0.1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"", "mqtts://example.com", "example.com:8883", "exa mple.com"} {
		if _, err := normalizeTLSNames([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestNeedsInternalIssuer(t *testing.T) {
	empty := &caddytls.TLS{}
	withPolicy := &caddytls.TLS{Automation: &caddytls.AutomationConfig{
		Policies: []*caddytls.AutomationPolicy{{SubjectsRaw: []string{"*.example.net"}}},
	}}
	for name, want := range map[string]bool{
		"localhost":           true,
		"mqtt.localhost":      true,
		"broker.local":        true,
		"broker.internal":     true,
		"nas.home.arpa":       true,
		"127.0.0.1":           true,
		"192.168.1.10":        true,
		"::1":                 true,
		"mqtt.example.com":    false,
		"203.0.113.7":         true, // public IP, default issuers do not issue for IPs
		"broker.example.test": false,
	} {
		if got := needsInternalIssuer(name, empty); got != want {
			t.Errorf("needsInternalIssuer(%q) = %v, want %v", name, got, want)
		}
	}
	if needsInternalIssuer("203.0.113.7", withPolicy) {
		t.Error("a public IP goes to the configured policies once there are any, as with site addresses")
	}
	if !policyNames(withPolicy, "mqtt.example.net") || policyNames(withPolicy, "mqtt.example.com") || policyNames(empty, "x.example.net") {
		t.Error("policyNames does not follow the policies' subjects")
	}
}
