package caddymqtt

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestClusterCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     *ClusterConfig
		parseErr string
	}{
		{in: "", want: nil},
		{in: "cluster nats {\n url nats://a:4222 nats://b:4222\n credentials /etc/nats.creds\n node n1\n subject_prefix site.mqtt\n tls {\n ca_file /ca.pem\n server_name nats\n }\n}",
			want: &ClusterConfig{NATS: &NATSConfig{URLs: []string{"nats://a:4222", "nats://b:4222"}, Credentials: "/etc/nats.creds",
				Node: "n1", SubjectPrefix: "site.mqtt", TLS: &NATSTLS{CAFile: "/ca.pem", ServerName: "nats"}}}},
		{in: "cluster nats {\n url nats://a\n}", want: &ClusterConfig{NATS: &NATSConfig{URLs: []string{"nats://a"}}}},
		{in: "cluster", parseErr: "wrong argument count"},
		{in: "cluster redis {\n url x\n}", parseErr: "unknown transport 'redis'"},
		{in: "cluster nats {\n node n1\n}", parseErr: "'url' is required"},
		{in: "cluster nats {\n url nats://a\n subject_prefix a.*\n}", parseErr: "not a literal NATS subject"},
		{in: "cluster nats {\n url nats://a\n gossip on\n}", parseErr: "unknown option 'gossip'"},
		{in: "cluster nats {\n url nats://a\n node\n}", parseErr: "wrong argument count"},
	} {
		var a App
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("mqtt {\n\t" + tc.in + "\n}"))
		if tc.parseErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.parseErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(a.Cluster, tc.want) {
			got, _ := json.Marshal(a.Cluster)
			t.Errorf("%q: got %s", tc.in, got)
		}
	}
}

// No cluster block: no hook, so the broker opens no NATS connection.
func TestNoClusterNoHook(t *testing.T) {
	var c *ClusterConfig
	if h, err := c.hook(); h != nil || err != nil {
		t.Fatalf("hook without a cluster: %v %v", h, err)
	}
	h, err := (&ClusterConfig{NATS: &NATSConfig{URLs: []string{"nats://127.0.0.1:1"}, Node: "n1"}}).hook()
	if err != nil || h == nil || h.Node() != "n1" {
		t.Fatalf("hook: %v %v", h, err)
	}
}
