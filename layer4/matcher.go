package l4mqtt

import (
	"io"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
)

func init() {
	caddy.RegisterModule(new(MatchMQTT))
}

// MatchMQTT matches connections that start with an MQTT CONNECT packet of
// any protocol level (3.1, 3.1.1, 5, and bridge variants), so one port can
// carry MQTT beside other protocols such as HTTP.
type MatchMQTT struct{}

// CaddyModule returns the Caddy module information.
func (*MatchMQTT) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.matchers.mqtt",
		New: func() caddy.Module { return new(MatchMQTT) },
	}
}

// Match reports whether the connection starts with an MQTT CONNECT. It reads
// no more than the fixed header, the protocol name, level and flags (at most
// 15 bytes).
func (m *MatchMQTT) Match(cx *layer4.Connection) (bool, error) {
	p := make([]byte, 0, maxConnectPrefix)
	for {
		v, need := CheckConnectPrefix(p)
		if v != NeedMore {
			return v == IsConnect, nil
		}
		chunk := p[len(p) : len(p)+need]
		if _, err := io.ReadFull(cx, chunk); err != nil {
			return false, err
		}
		p = p[:len(p)+need]
	}
}

// Verdict is what CheckConnectPrefix says of a prefix.
type Verdict int

// The verdicts of CheckConnectPrefix.
const (
	NeedMore Verdict = iota
	IsConnect
	NotConnect
)

// maxConnectPrefix: fixed header (1) + remaining length (up to 4) + name
// length (2) + "MQIsdp" (6) + level (1) + flags (1).
const maxConnectPrefix = 15

// CheckConnectPrefix inspects the first bytes of a stream. When it needs more
// to decide it returns NeedMore and how many more bytes it needs at least.
func CheckConnectPrefix(p []byte) (Verdict, int) {
	if len(p) < 1 {
		return NeedMore, 1
	}
	// CONNECT is packet type 1 and its flags nibble must be zero.
	if p[0] != 0x10 {
		return NotConnect, 0
	}
	// Remaining length: a variable byte integer of one to four bytes.
	remaining, i, mult := 0, 1, 1
	for {
		if len(p) <= i {
			return NeedMore, 1
		}
		remaining += int(p[i]&0x7f) * mult
		mult *= 128
		i++
		if p[i-1]&0x80 == 0 {
			break
		}
		if i == 5 {
			return NotConnect, 0
		}
	}
	// The smallest CONNECT variable header is 10 bytes (name "MQTT",
	// level, flags, keepalive).
	if remaining < 10 {
		return NotConnect, 0
	}
	if len(p) < i+2 {
		return NeedMore, i + 2 - len(p)
	}
	nameLen := int(p[i])<<8 | int(p[i+1])
	if nameLen != 4 && nameLen != 6 {
		return NotConnect, 0
	}
	i += 2
	end := i + nameLen + 2 // name, level, flags
	if len(p) < end {
		return NeedMore, end - len(p)
	}
	name, level, flags := string(p[i:i+nameLen]), p[i+nameLen]&0x7f, p[i+nameLen+1]
	switch {
	case name == "MQIsdp" && level == 3, name == "MQTT" && (level == 4 || level == 5):
	default:
		return NotConnect, 0
	}
	// Bit 0 of the connect flags is reserved and must be zero.
	if flags&0x01 != 0 {
		return NotConnect, 0
	}
	return IsConnect, 0
}

// UnmarshalCaddyfile sets up the matcher from Caddyfile tokens. Syntax:
//
//	mqtt
func (m *MatchMQTT) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	_, wrapper := d.Next(), d.Val()
	if d.CountRemainingArgs() > 0 {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("malformed layer4 connection matcher '%s': blocks are not supported", wrapper)
	}
	return nil
}

// Interface guards
var (
	_ layer4.ConnMatcher    = (*MatchMQTT)(nil)
	_ caddyfile.Unmarshaler = (*MatchMQTT)(nil)
)
