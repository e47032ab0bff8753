package broker

import "github.com/caddy-mqtt/caddy-mqtt/broker/internal/keylock"

// idLocks serialises, per client id, the steps in which mochi hands a client
// id from one connection to another. mochi's takeover (inheritClientSession:
// look the id up, disconnect the old client, register the new one) is not
// atomic, and neither is the old client's exit (is it taken over? if not,
// remove the id from the client list). Two CONNECTs with one id at the same
// moment both took over the old session and both stayed connected, the
// earlier one orphaned; an old client leaving at that moment could remove its
// successor's entry. A connection holds its id's lock from OnSessionEstablish
// until its CONNACK is sent (OnSessionEstablished), and again from
// OnDisconnect until Serve returns.
type idLocks = keylock.Locks

// holdID takes the connection's client id lock unless it holds it already.
// Only the goroutine serving the connection calls it (mochi runs the hooks
// involved on that goroutine), so unlockID needs no lock of its own.
func (c *clientConn) holdID(l *idLocks, id string) {
	if c.unlockID == nil {
		c.unlockID = l.Lock(id)
	}
}

// releaseID releases the client id lock if the connection holds it.
func (c *clientConn) releaseID() {
	if c.unlockID != nil {
		c.unlockID()
		c.unlockID = nil
	}
}
