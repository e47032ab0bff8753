package broker

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBusy is returned when a CONNECT could not get a turn at password
// checking in time, or its address already has enough checks under way.
// The client gets CONNACK "server busy" (v5 0x89, v3 return code 3).
var ErrBusy = errors.New("too many logins at once")

// ErrTooManyFailures is returned, without checking the password, for a
// CONNECT from an address whose recent logins failed too often. It is
// answered like ErrBusy.
var ErrTooManyFailures = errors.New("too many failed logins from this address")

// Bounds of the password checking (see authGate).
const (
	// authQueueWait is the longest a CONNECT waits for a hash slot.
	authQueueWait = 2 * time.Second
	// authFailureBurst failed logins per address are allowed at once, then
	// one every authFailureInterval/authFailureBurst (one per 2 s).
	authFailureBurst    = 30
	authFailureInterval = time.Minute
)

// authGate bounds password checking. Password hashes are slow on purpose
// (PBKDF2, bcrypt) and argon2id allocates tens of MiB per check, and every
// CONNECT with a username and password runs one — unknown users too,
// against a decoy, so as not to reveal who exists. Unbounded, a burst of
// CONNECTs with made-up credentials would take all CPUs or memory; mosquitto
// checks one at a time.
//
// Only CONNECTs that need a password check take a slot (PasswordChecker):
// clients known by their verified certificate and anonymous clients never
// wait. One address cannot hold all slots (perAddr), failed
// logins per address are rate-limited (a token bucket), and nobody waits
// longer than authQueueWait.
type authGate struct {
	slots chan struct{}
	// perAddr is how many password checks one client address (IPv6: its
	// /64) may have queued or running at once: half the slots, so that one
	// address never holds them all.
	perAddr  int
	failures *rateLimiter

	mu      sync.Mutex
	pending map[string]int

	// Counted for the log: failed password checks and CONNECTs refused
	// without a check.
	failed, refused atomic.Int64
}

func newAuthGate() *authGate {
	n := max(2, runtime.GOMAXPROCS(0))
	return &authGate{
		slots:    make(chan struct{}, n),
		perAddr:  n / 2,
		failures: newRateLimiter(authFailureBurst, authFailureInterval),
		pending:  make(map[string]int),
	}
}

// PasswordChecker is implemented by policies that can tell whether a
// CONNECT needs a (slow) password check. Policies that do not implement it
// are always run in a hash slot.
type PasswordChecker interface {
	NeedsPasswordCheck(c *Client, password []byte) bool
}

func (g *authGate) enter(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending[key] >= g.perAddr {
		return false
	}
	g.pending[key]++
	return true
}

func (g *authGate) leave(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending[key]--; g.pending[key] <= 0 {
		delete(g.pending, key)
	}
}

// authenticate runs the policy's check, in one of the hash slots when it
// needs a password check.
func (b *Broker) authenticate(p Policy, c *Client, password []byte) error {
	if pc, ok := p.(PasswordChecker); ok && !pc.NeedsPasswordCheck(c, password) {
		return p.Authenticate(c, password)
	}
	g := b.auth
	host, _, err := net.SplitHostPort(c.RemoteAddr)
	if err != nil {
		host = c.RemoteAddr
	}
	key := hostKey(host)
	now := time.Now()
	if !g.failures.peek(key, now) {
		g.refused.Add(1)
		return ErrTooManyFailures
	}
	if !g.enter(key) {
		g.refused.Add(1)
		return ErrBusy
	}
	defer g.leave(key)
	timer := time.NewTimer(min(authQueueWait, b.opts.ConnectTimeout))
	defer timer.Stop()
	select {
	case g.slots <- struct{}{}:
	case <-timer.C:
		g.refused.Add(1)
		return ErrBusy
	}
	err = p.Authenticate(c, password)
	<-g.slots
	if errors.Is(err, ErrNotAuthorized) {
		g.failed.Add(1)
		g.failures.allow(key, time.Now())
	}
	return err
}

// busy reports whether err refuses a CONNECT for load rather than for its
// credentials.
func busy(err error) bool {
	return errors.Is(err, ErrBusy) || errors.Is(err, ErrTooManyFailures)
}

// logBusy logs a CONNECT refused by the password-check bounds, at most once
// per interval for each reason and address (a flood would otherwise become a
// flood of log lines), with the running counts.
func (b *Broker) logBusy(c *Client, err error) {
	if b.refusals.allow(err.Error()+"\x00"+c.RemoteAddr, time.Now()) {
		b.log.Warn("mqtt login refused", "client", c.ID, "username", c.Username, "door", string(c.Door),
			"remote", c.RemoteAddr, "reason", err.Error(),
			"failed_logins", b.auth.failed.Load(), "refused_logins", b.auth.refused.Load())
	}
}
