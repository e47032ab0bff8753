package main

import (
	"fmt"
	"net"
	"testing"
)

// TestFreePortsBelowEphemeralRange: the brokers' ports are free and below
// the local ports of outgoing connections, which could take them between
// two cases.
func TestFreePortsBelowEphemeralRange(t *testing.T) {
	ps := freePorts(9)
	seen := map[int]bool{}
	for _, p := range ps {
		if p < 10000 || p >= ephemeralPortsFrom() || seen[p] {
			t.Fatalf("ports %v: %d is a duplicate or outside 10000..%d", ps, p, ephemeralPortsFrom()-1)
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		l.Close()
	}
}
