//go:build !linux

package broker

import "net"

// rawSocket is Linux only; elsewhere every connection uses the writer
// goroutine (writer.go).
type rawSocket struct {
	conn net.Conn
}

func newRawSocket(net.Conn) *rawSocket { return nil }

func (s *rawSocket) tryWrite1([]byte) (int, error) { return 0, nil }

func (s *rawSocket) idle() bool { return false }

func (s *rawSocket) wrote() {}
