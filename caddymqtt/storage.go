package caddymqtt

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// StorageConfig is where the broker keeps persistent sessions, their
// subscriptions, retained messages and QoS 1/2 messages in flight, so that
// they survive a restart (also kill -9). Without it everything is kept in
// memory. The store is opened when the broker first starts (never by
// `caddy validate`) and closed when Caddy stops. Fixed: a reload that
// changes it only takes effect after a restart.
type StorageConfig struct {
	// The kind of store: "bolt" (one bbolt file, every write committed with
	// fsync) or "memory" (nothing on disk, the default).
	Kind string `json:"kind,omitempty"`

	// The database file. Default: mqtt/broker.bolt under Caddy's data
	// directory. A relative path is relative to the data directory.
	Path string `json:"path,omitempty"`

	// How long to wait for another process holding the file. Default 5s.
	LockTimeout caddy.Duration `json:"lock_timeout,omitempty"`
}

// brokerStorage resolves the configured storage; it touches no file.
func (s *StorageConfig) brokerStorage() broker.Storage {
	if s == nil || s.Kind == "" || s.Kind == "memory" || s.Kind == "none" {
		return broker.Storage{}
	}
	path := s.Path
	if path == "" {
		path = filepath.Join("mqtt", "broker."+s.Kind)
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(caddy.AppDataDir(), path)
	}
	return broker.Storage{Kind: s.Kind, Path: path, LockTimeout: time.Duration(s.LockTimeout)}
}

func (s *StorageConfig) validate() error {
	if s != nil && s.LockTimeout < 0 {
		return fmt.Errorf("storage: lock_timeout must not be negative")
	}
	bs := s.brokerStorage()
	if err := bs.Validate(); err != nil {
		if slices.Contains(broker.StorageKinds, bs.Kind) {
			return err
		}
		// The broker knows only the kinds that store something; memory
		// (or none) is handled here.
		return fmt.Errorf("unknown storage kind %q (supported: memory, %s)", s.Kind, strings.Join(broker.StorageKinds, ", "))
	}
	return nil
}

// unmarshalStorage parses
//
//	storage <memory|bolt> [<path>] [{
//		lock_timeout <duration>
//	}]
func unmarshalStorage(d *caddyfile.Dispenser) (*StorageConfig, error) {
	var s StorageConfig
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	s.Kind = d.Val()
	if d.NextArg() {
		s.Path = d.Val()
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "lock_timeout":
			dur, err := parseDurationArg(d)
			if err != nil {
				return nil, err
			}
			s.LockTimeout = dur
		default:
			return nil, d.Errf("unknown storage option '%s'", d.Val())
		}
	}
	if err := s.validate(); err != nil {
		return nil, d.Err(err.Error())
	}
	return &s, nil
}

// warnStorageChange says that a reload's storage setting waits for a
// restart.
func warnStorageChange(log *zap.Logger, running, configured broker.Storage) {
	if running != configured {
		log.Warn("mqtt storage changed; it applies after a restart, the running broker keeps its current store",
			zap.String("running_kind", running.Kind), zap.String("running_path", running.Path),
			zap.String("configured_kind", configured.Kind), zap.String("configured_path", configured.Path))
	}
}
