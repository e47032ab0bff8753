package broker

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Rechecker is implemented by policies that can re-authorise live sessions
// when a reload puts them in force (SetPolicy).
type Rechecker interface {
	// Credential names what let c in under this policy (which password
	// file entry, a certificate, anonymous access), never the password
	// itself. The broker keeps it for the session.
	Credential(c *Client) string
	// Recheck reports why the session of c, let in by credential under
	// the policy prev, is not allowed under this one, or nil.
	Recheck(prev Policy, c *Client, credential string) error
}

// authed is what the broker keeps of an authenticated connection for
// rechecks.
type authed struct {
	cl         *mqtt.Client
	credential string
}

// remember records what let cc in. When the policy changed while it was
// being authenticated (a reload), it is checked against the new one at
// once: the reload's recheck may have run before this was recorded.
func (b *Broker) remember(cc *clientConn, cl *mqtt.Client, p Policy) error {
	rc, ok := p.(Rechecker)
	if !ok {
		return nil
	}
	c := cc.client.Load()
	cc.authed.Store(&authed{cl: cl, credential: rc.Credential(c)})
	if now := b.Policy(); now != p {
		if rn, ok := now.(Rechecker); ok {
			return rn.Recheck(p, c, rc.Credential(c))
		}
	}
	return nil
}

// recheck re-authorises every authenticated connection against p, which
// replaced prev, and
// disconnects those p no longer allows: MQTT 5 clients with DISCONNECT 0x87
// (not authorized), MQTT 3 clients by closing the connection.
func (b *Broker) recheck(prev, p Policy) {
	rc, ok := p.(Rechecker)
	if !ok || b.srv == nil {
		return
	}
	b.mu.Lock()
	type victim struct {
		cc  *clientConn
		a   *authed
		err error
	}
	var out []victim
	for cc := range b.conns {
		a, c := cc.authed.Load(), cc.client.Load()
		if a == nil || c == nil {
			continue
		}
		if err := rc.Recheck(prev, c, a.credential); err != nil {
			out = append(out, victim{cc, a, err})
		}
	}
	b.mu.Unlock()
	if len(out) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, v := range out {
		c := v.cc.client.Load()
		b.log.Info("mqtt session ended by reload",
			"client", c.ID, "username", c.Username, "door", string(c.Door), "reason", v.err.Error())
		wg.Go(func() {
			cl := v.a.cl
			if cl.Properties.ProtocolVersion >= 5 && v.cc.established.Load() {
				b.disconnect(cl, packets.ErrNotAuthorized)
			}
			cl.Stop(packets.ErrNotAuthorized)
			_ = v.cc.Close()
		})
	}
	wg.Wait()
	b.log.Warn("mqtt reload disconnected sessions the new configuration no longer allows", "count", len(out))
}
