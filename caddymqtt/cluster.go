package caddymqtt

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap/exp/zapslog"

	"github.com/caddy-mqtt/caddy-mqtt/broker/cluster"
)

// ClusterConfig joins this node's broker with the brokers of other Caddy
// nodes through NATS: a client on one node receives what a client on any
// node publishes, retained messages are shared, and a shared subscription
// delivers each message to one member in the whole cluster. Without it the
// broker is a single node and opens no NATS connection. Fixed: a reload
// that changes it only takes effect after a restart. See the README's
// "Cluster" section.
type ClusterConfig struct {
	// NATS is the NATS connection (the only transport so far).
	NATS *NATSConfig `json:"nats,omitempty"`
}

// NATSConfig is the connection to a NATS server or cluster (with JetStream
// enabled, for retained messages).
type NATSConfig struct {
	// NATS server URLs, e.g. nats://nats1:4222. Required.
	URLs []string `json:"urls,omitempty"`

	// A NATS credentials file (user JWT and nkey seed).
	Credentials string `json:"credentials,omitempty"`

	// TLS to the NATS server: a CA file to trust, and a client
	// certificate and key for mutual TLS.
	TLS *NATSTLS `json:"tls,omitempty"`

	// This node's name, unique in the cluster. Default: Caddy's instance
	// id (stored in its data directory, so stable across restarts).
	Node string `json:"node,omitempty"`

	// The first token of every NATS subject and the name of the
	// retained-message bucket (<prefix>_retained). Default "mqtt".
	SubjectPrefix string `json:"subject_prefix,omitempty"`
}

// NATSTLS is the TLS configuration of the NATS connection.
type NATSTLS struct {
	CAFile     string `json:"ca_file,omitempty"`
	CertFile   string `json:"cert_file,omitempty"`
	KeyFile    string `json:"key_file,omitempty"`
	ServerName string `json:"server_name,omitempty"`
}

// hook builds the cluster hook; it connects nothing (the broker's start
// does).
func (c *ClusterConfig) hook() (*cluster.Hook, error) {
	if c == nil {
		return nil, nil
	}
	if c.NATS == nil {
		return nil, fmt.Errorf("cluster: only 'nats' is supported")
	}
	n := c.NATS
	cfg := cluster.Config{
		URLs:          n.URLs,
		Credentials:   n.Credentials,
		Node:          n.Node,
		SubjectPrefix: n.SubjectPrefix,
		Logger:        slog.New(zapslog.NewHandler(caddy.Log().Core(), zapslog.WithName("mqtt.cluster"))),
	}
	if cfg.Node == "" {
		id, err := caddy.InstanceID()
		if err != nil {
			return nil, fmt.Errorf("cluster: no node id and no instance id: %v", err)
		}
		cfg.Node = id.String()
	}
	if n.Credentials != "" {
		if _, err := os.Stat(n.Credentials); err != nil {
			return nil, fmt.Errorf("cluster: credentials: %v", err)
		}
	}
	if n.TLS != nil {
		tc, err := n.TLS.config()
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
	}
	return cluster.New(cfg)
}

func (t *NATSTLS) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: tls ca_file: %v", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster: tls ca_file %s holds no PEM certificate", t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, fmt.Errorf("cluster: tls needs both cert_file and key_file")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: tls client certificate: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// unmarshalCluster parses
//
//	cluster nats {
//		url <nats://...> [<more urls>...]
//		credentials <file>
//		node <id>
//		subject_prefix <prefix>
//		tls {
//			ca_file <file>
//			cert_file <file>
//			key_file <file>
//			server_name <name>
//		}
//	}
func unmarshalCluster(d *caddyfile.Dispenser) (*ClusterConfig, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	if d.Val() != "nats" {
		return nil, d.Errf("cluster: unknown transport '%s' (only 'nats')", d.Val())
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	n := &NATSConfig{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "url":
			urls := d.RemainingArgs()
			if len(urls) == 0 {
				return nil, d.ArgErr()
			}
			n.URLs = append(n.URLs, urls...)
		case "credentials":
			n.Credentials, err = parseStringArg(d)
		case "node":
			n.Node, err = parseStringArg(d)
		case "subject_prefix":
			n.SubjectPrefix, err = parseStringArg(d)
		case "tls":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			n.TLS = &NATSTLS{}
			for tn := d.Nesting(); d.NextBlock(tn); {
				switch d.Val() {
				case "ca_file":
					n.TLS.CAFile, err = parseStringArg(d)
				case "cert_file":
					n.TLS.CertFile, err = parseStringArg(d)
				case "key_file":
					n.TLS.KeyFile, err = parseStringArg(d)
				case "server_name":
					n.TLS.ServerName, err = parseStringArg(d)
				default:
					return nil, d.Errf("cluster tls: unknown option '%s'", d.Val())
				}
				if err != nil {
					return nil, err
				}
			}
		default:
			return nil, d.Errf("cluster: unknown option '%s'", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	if len(n.URLs) == 0 {
		return nil, d.Err("cluster nats: 'url' is required")
	}
	c := &ClusterConfig{NATS: n}
	if err := (cluster.Config{URLs: n.URLs, Node: "x", SubjectPrefix: n.SubjectPrefix}).Validate(); err != nil {
		return nil, d.Err(err.Error())
	}
	return c, nil
}
