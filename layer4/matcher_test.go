package l4mqtt

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"
)

// connectV4 and connectV5 are CONNECT packets as mosquitto_pub sends them.
var (
	connectV4 = []byte{0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x06, 'c', 'l', 'i', 'e', 'n', 't'}
	connectV5 = []byte{0x10, 0x13, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x06, 'c', 'l', 'i', 'e', 'n', 't'}
	connectV3 = []byte{0x10, 0x14, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03, 0x02, 0x00, 0x3c, 0x00, 0x06, 'c', 'l', 'i', 'e', 'n', 't'}
)

func TestCheckConnectPrefix(t *testing.T) {
	bridge := append([]byte(nil), connectV4...)
	bridge[8] = 0x84 // mosquitto bridges set the top bit of the level
	longLen := []byte{0x10, 0x80, 0x80, 0x01, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x00}
	for _, tc := range []struct {
		name string
		in   []byte
		want Verdict
	}{
		{"v3.1", connectV3, IsConnect},
		{"v3.1.1", connectV4, IsConnect},
		{"v5", connectV5, IsConnect},
		{"bridge", bridge, IsConnect},
		{"three-byte remaining length", longLen, IsConnect},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), NotConnect},
		{"tls client hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00}, NotConnect},
		{"publish first", []byte{0x30, 0x05, 0x00, 0x01, 'a', 'x', 'y'}, NotConnect},
		{"connect with flags", []byte{0x12, 0x12, 0x00, 0x04}, NotConnect},
		{"remaining length too short", []byte{0x10, 0x05, 0x00, 0x04, 'M'}, NotConnect},
		{"five-byte remaining length", []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}, NotConnect},
		{"wrong name", []byte{0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'X', 0x04, 0x02}, NotConnect},
		{"MQTT name with level 3", []byte{0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x03, 0x02}, NotConnect},
		{"level 6", []byte{0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x06, 0x02}, NotConnect},
		{"reserved flag set", []byte{0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x03}, NotConnect},
		{"empty", nil, NeedMore},
		{"half", connectV4[:6], NeedMore},
		{"no flags yet", connectV4[:9], NeedMore},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := CheckConnectPrefix(tc.in)
			if got != tc.want {
				t.Fatalf("CheckConnectPrefix(%x) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// TestMatchOverRealConnection runs the matcher on a layer4 connection over
// a loopback socket, with the CONNECT arriving one byte at a time, the way
// layer4 routes call it (reads past the prefetched bytes ask for more).
func TestMatchOverRealConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want bool
	}{
		{"connect", connectV5, true},
		{"http", []byte("GET /mqtt HTTP/1.1\r\n\r\n"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					return
				}
				defer c.Close()
				for _, b := range tc.in {
					_, _ = c.Write([]byte{b})
					time.Sleep(time.Millisecond)
				}
				time.Sleep(time.Second)
			}()
			conn, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			// Let the whole input arrive, then match on it: layer4 prefetches
			// before it calls matchers.
			time.Sleep(100 * time.Millisecond)
			buf := make([]byte, 0, 4096)
			n, _ := conn.Read(buf[:cap(buf)])
			cx := layer4.WrapConnection(&prefixConn{Conn: conn, prefix: buf[:n]}, nil, zap.NewNop())
			got, err := new(MatchMQTT).Match(cx)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

// prefixConn replays bytes already read from the socket.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// FuzzCheckConnectPrefix: never panics, never asks for bytes past the
// maximum prefix, and its verdict on a prefix does not change when more bytes
// arrive.
func FuzzCheckConnectPrefix(f *testing.F) {
	for _, seed := range [][]byte{connectV3, connectV4, connectV5, []byte("GET / HTTP/1.1\r\n"), {0x10, 0xff, 0xff, 0xff, 0x7f}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		final, _ := CheckConnectPrefix(in)
		for i := 0; i <= len(in); i++ {
			v, need := CheckConnectPrefix(in[:i])
			if v == NeedMore {
				if need < 1 || i+need > maxConnectPrefix {
					t.Fatalf("prefix %x: asks for %d more bytes", in[:i], need)
				}
				continue
			}
			if v != final {
				t.Fatalf("prefix %x says %v, full input %x says %v", in[:i], v, in, final)
			}
			if !bytes.Equal(in[:i], in[:i]) {
				t.Fatal("unreachable")
			}
			break
		}
	})
}
