package broker

import "syscall"

// setReceiveBuffer sets a socket's SO_RCVBUF before it connects, so that a
// test client's receive window is small from the start.
func setReceiveBuffer(fd uintptr, n int) {
	_ = syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
