package cluster

import "testing"

// TestClaimSeenLate: the watch may deliver another node's claim after this
// node's own claim of the same client id has started; only a claim later
// than this node's takes the connection over. Before claims were pending,
// node 2 closed the connection that had just taken device-7 over from node
// 1 when node 1's claim reached its watch late (TestTakeoverAcrossNodes
// failed so, once, under load).
func TestClaimSeenLate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		other     uint64 // another node's claim, seen while ours is pending
		mine      uint64 // our claim's revision once written (0: failed)
		takenOver bool
	}{
		{"earlier claim seen late", 4, 5, false},
		{"later claim", 6, 5, true},
		{"our claim not written", 4, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &owners{mine: map[string]uint64{}, late: map[string]uint64{}}
			o.mine["device-7"] = claimPending // claim: before its round trip
			if o.owns("device-7") {
				t.Error("a pending claim owns the session")
			}
			if o.other("device-7", tc.other) {
				t.Fatal("taken over while our claim was on its way")
			}
			if got := o.settle("device-7", tc.mine); got != tc.takenOver {
				t.Fatalf("settle: taken over %v, want %v", got, tc.takenOver)
			}
			if owns := o.owns("device-7"); owns == tc.takenOver {
				t.Errorf("owns %v after settling", owns)
			}
			if len(o.late) != 0 {
				t.Errorf("late claims left: %v", o.late)
			}
		})
	}
	t.Run("settled claims", func(t *testing.T) {
		o := &owners{mine: map[string]uint64{"a": 5}, late: map[string]uint64{}}
		if o.other("a", 4) {
			t.Error("an older claim took the session over")
		}
		if !o.other("a", 6) {
			t.Error("a newer claim did not take the session over")
		}
		if !o.other("b", 1) {
			t.Error("a claim of an id this node never claimed must close a local connection of it")
		}
	})
	t.Run("released while pending", func(t *testing.T) {
		o := &owners{mine: map[string]uint64{"a": claimPending}, late: map[string]uint64{}}
		o.other("a", 9)
		delete(o.mine, "a") // release: the connection closed
		if o.settle("a", 5) || o.owns("a") {
			t.Error("a released claim came back")
		}
	})
}
