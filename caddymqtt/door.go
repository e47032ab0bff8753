package caddymqtt

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// maxPacketSizeLimit is the largest packet MQTT can frame: the largest
// remaining length (268,435,455) plus a five-byte fixed header.
const maxPacketSizeLimit = 268435455 + 5

// DoorOptions are the settings every door (the HTTP mqtt handler and the
// layer4 mqtt handler) takes in its own mqtt block. Each one wins over the
// mqtt app's setting of the same name for the clients of that door.
type DoorOptions struct {
	// A name for this door in metrics (the door label), logs and the admin
	// API, for configs with several doors of one kind. Default: the kind,
	// ws, wss, tcp or tls. Letters, digits, '.', '_' and '-'.
	Name string `json:"name,omitempty"`

	// Allow clients without a username on this door.
	AllowAnonymous *bool `json:"allow_anonymous,omitempty"`

	// Take usernames from verified client certificates on this door. Needs
	// client_auth with mode require_and_verify (or verify_if_given) in the
	// TLS connection policy in front of the door.
	UseIdentityAsUsername *bool `json:"use_identity_as_username,omitempty"`
	UseSubjectAsUsername  *bool `json:"use_subject_as_username,omitempty"`

	// Most connections served through this door at once (0: only the app's
	// max_connections applies). Connections over it are closed at once.
	MaxConnections int `json:"max_connections,omitempty"`

	// Largest packet a client of this door may send, in bytes. It can only
	// lower the app's max_packet_size.
	MaxPacketSize int `json:"max_packet_size,omitempty"`

	// A password file (mosquitto's format) for this door's clients, in
	// place of the app's users (mosquitto's per_listener_settings).
	PasswordFile string `json:"password_file,omitempty"`

	// An ACL file (mosquitto's format) for this door's clients, in place of
	// the app's ACL.
	ACLFile string `json:"acl_file,omitempty"`

	// authKey names this door's files in the app's policy (ProvisionAuth).
	authKey string
	// instance identifies this handler, whose connections max_connections
	// counts (ProvisionAuth).
	instance *doorInstance

	// QoS 1 and 2 messages written to one client of this door and not yet
	// acknowledged, at most (an MQTT 5 client's smaller Receive Maximum
	// wins). 0: the app's max_inflight_messages.
	MaxInflightMessages int `json:"max_inflight_messages,omitempty"`

	// QoS 1 and 2 messages held for one client of this door beyond those in
	// flight, connected or not; more are dropped. 0: the app's
	// max_queued_messages.
	MaxQueuedMessages int `json:"max_queued_messages,omitempty"`

	// The longest keep alive, in seconds, a client of this door may ask
	// for (mosquitto's max_keepalive). 0: the app's max_keepalive.
	MaxKeepalive int `json:"max_keepalive,omitempty"`
}

// ConnInfo is what the broker is told about a connection of this door.
func (o DoorOptions) ConnInfo(door broker.Door) broker.ConnInfo {
	info := broker.ConnInfo{
		Door:           door,
		AllowAnonymous: o.AllowAnonymous,
		Identity:       DoorIdentity(o.UseIdentityAsUsername, o.UseSubjectAsUsername),
		AuthKey:        o.authKey,
		Name:           o.Name,
		Limits: broker.DoorLimits{
			MaxConnections: o.MaxConnections,
			MaxPacketSize:  uint32(o.MaxPacketSize),

			MaxInflightMessages: o.MaxInflightMessages,
			MaxQueuedMessages:   o.MaxQueuedMessages,
			MaxKeepalive:        uint16(o.MaxKeepalive),
		},
	}
	if o.instance != nil { // a typed nil would make every such door one
		info.Handler = o.instance
	}
	return info
}

// Validate checks the door's options.
func (o DoorOptions) Validate() error {
	if o.UseIdentityAsUsername != nil && *o.UseIdentityAsUsername &&
		o.UseSubjectAsUsername != nil && *o.UseSubjectAsUsername {
		return errors.New("use_identity_as_username and use_subject_as_username exclude each other")
	}
	if !validDoorName(o.Name) {
		return fmt.Errorf("name %q: use 1 to 64 letters, digits, '.', '_' or '-'", o.Name)
	}
	if o.MaxConnections < 0 {
		return fmt.Errorf("max_connections %d must not be negative", o.MaxConnections)
	}
	if o.MaxPacketSize < 0 || o.MaxPacketSize > maxPacketSizeLimit {
		return fmt.Errorf("max_packet_size %d out of range (0 to 256 MiB)", o.MaxPacketSize)
	}
	if o.MaxKeepalive < 0 || o.MaxKeepalive > 65535 {
		return fmt.Errorf("max_keepalive %d out of range (0 to 65535)", o.MaxKeepalive)
	}
	return validateFlow(o.MaxInflightMessages, o.MaxQueuedMessages)
}

// validateFlow checks max_inflight_messages and max_queued_messages. Both
// count messages a client has stored, which MQTT's 16-bit packet
// identifiers bound.
func validateFlow(inflight, queued int) error {
	if inflight < 0 || inflight > 65535 {
		return fmt.Errorf("max_inflight_messages %d out of range (0 to 65535)", inflight)
	}
	if queued < 0 || queued > 65535 {
		return fmt.Errorf("max_queued_messages %d out of range (0 to 65535)", queued)
	}
	return nil
}

// UnmarshalDoorOption parses the door option at the dispenser's cursor. It
// reports false for a token that is not a door option. Syntax:
//
//	allow_anonymous [true|false]
//	use_identity_as_username [true|false]
//	use_subject_as_username [true|false]
//	max_connections <n>
//	max_packet_size <size>
//	max_inflight_messages <n>
//	max_queued_messages <n>
//	max_keepalive <seconds>
//	password_file <path>
//	acl_file <path>
//	name <name>
func (o *DoorOptions) UnmarshalDoorOption(d *caddyfile.Dispenser) (bool, error) {
	var target **bool
	switch d.Val() {
	case "allow_anonymous":
		target = &o.AllowAnonymous
	case "use_identity_as_username":
		target = &o.UseIdentityAsUsername
	case "use_subject_as_username":
		target = &o.UseSubjectAsUsername
	case "max_connections":
		n, err := parseIntArg(d, math.MaxInt32)
		o.MaxConnections = n
		return true, err
	case "max_packet_size":
		n, err := parseSizeArg(d)
		o.MaxPacketSize = n
		return true, err
	case "password_file":
		v, err := parseStringArg(d)
		o.PasswordFile = v
		return true, err
	case "acl_file":
		v, err := parseStringArg(d)
		o.ACLFile = v
		return true, err
	case "name":
		v, err := parseStringArg(d)
		if err == nil && !validDoorName(v) {
			err = d.Errf("name '%s': use 1 to 64 letters, digits, '.', '_' or '-'", v)
		}
		o.Name = v
		return true, err
	case "max_inflight_messages":
		n, err := parseIntArg(d, 65535)
		o.MaxInflightMessages = n
		return true, err
	case "max_queued_messages":
		n, err := parseIntArg(d, 65535)
		o.MaxQueuedMessages = n
		return true, err
	case "max_keepalive":
		n, err := parseIntArg(d, 65535)
		o.MaxKeepalive = n
		return true, err
	default:
		return false, nil
	}
	v, err := ParseBoolArg(d)
	if err != nil {
		return true, err
	}
	*target = &v
	return true, nil
}

// unmarshalConnectionRate parses `max_connection_rate <n> [<per duration>]`.
func (a *App) unmarshalConnectionRate(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return d.ArgErr()
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 0 {
		return d.Errf("max_connection_rate: want a whole number of connections, got '%s'", args[0])
	}
	a.MaxConnectionRate = n
	if len(args) == 2 {
		dur, err := caddy.ParseDuration(args[1])
		if err != nil || dur <= 0 {
			return d.Errf("max_connection_rate: want an interval such as 10s, got '%s'", args[1])
		}
		a.ConnectionRateInterval = caddy.Duration(dur)
	}
	return nil
}

// doorInstance identifies one door handler of one config: a door's
// max_connections counts the connections of its own handler, not those of
// every handler of its kind. (Not zero-sized: pointers to distinct
// zero-sized values may compare equal.)
type doorInstance struct{ _ byte }

// ProvisionAuth reads the door's own password_file and acl_file into the
// app's policy, under a key made of the files' paths: the policy is swapped
// in whole on a reload, so the clients of a door keep their key and see the
// files' new contents, while the sessions of a door that now names other
// files (or gained or lost files of its own, or changed its
// allow_anonymous) are disconnected by the reload. group is the door's
// broker.DoorGroup.
func (o *DoorOptions) ProvisionAuth(app *App, group string) error {
	o.instance = new(doorInstance)
	key := ""
	if o.PasswordFile != "" || o.ACLFile != "" {
		key = "password_file=" + absPath(o.PasswordFile) + "\x00acl_file=" + absPath(o.ACLFile)
		if err := app.addDoorAuth(key, o.PasswordFile, o.ACLFile); err != nil {
			return err
		}
	}
	o.authKey = key
	app.addDoorKey(group, broker.DoorSignature(key, o.AllowAnonymous))
	return nil
}

func absPath(p string) string {
	if p == "" {
		return ""
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// validDoorName reports whether name can label a door ("" is the default).
func validDoorName(name string) bool {
	if len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
