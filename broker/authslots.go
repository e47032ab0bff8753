package broker

import (
	"errors"
	"runtime"
	"time"
)

// ErrBusy is returned when a CONNECT could not get a turn at password
// checking before its CONNECT deadline.
var ErrBusy = errors.New("too many logins at once")

// authSlots bounds how many CONNECTs are authenticated at once. Password
// hashes are slow on purpose (PBKDF2, bcrypt) and argon2id allocates tens of
// MiB per check, and every CONNECT runs one — unknown users too, against a
// decoy, so as not to reveal who exists. Unbounded, a burst of CONNECTs with
// made-up credentials would take all CPUs or memory; mosquitto checks one at
// a time.
func newAuthSlots() chan struct{} {
	return make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
}

// authenticate runs the policy's check in one of the slots, waiting at most
// the CONNECT timeout for one.
func (b *Broker) authenticate(p Policy, c *Client, password []byte) error {
	timer := time.NewTimer(b.opts.ConnectTimeout)
	defer timer.Stop()
	select {
	case b.authSlots <- struct{}{}:
	case <-timer.C:
		return ErrBusy
	}
	defer func() { <-b.authSlots }()
	return p.Authenticate(c, password)
}
