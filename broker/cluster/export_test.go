package cluster

import "time"

// HoldAdoptions makes every adoption of a session on h wait d before it
// starts, as a slow JetStream would.
func HoldAdoptions(h *Hook, d time.Duration) { h.ho.hold.Store(int64(d)) }
