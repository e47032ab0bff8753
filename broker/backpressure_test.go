package broker

import (
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestWriteWakesSlotWaiter: a publisher waiting for room in a subscriber's
// mochi write channel is woken by the subscriber's next Write once the
// channel is below half (mochi's writer calls Write for every packet it
// takes from the channel), not by a timer: it slept 500 µs at a time, a
// sixth of the publishers' time at 64 B (backpressure.go).
func TestWriteWakesSlotWaiter(t *testing.T) {
	br := newBroker(t, Options{Logger: slog.New(slog.DiscardHandler)}, AnonymousPolicy{Allow: true})
	client, server := tcpPair(t)
	go io.Copy(io.Discard, client)
	cc := &clientConn{Conn: server, broker: br}
	cl := br.srv.NewClient(cc, "tcp", "sub", false)
	cc.mochi = cl
	out := mochiOutbound(cl)
	for range mochiWriteSlots/2 + 8 {
		out.Send(reflect.ValueOf(&packets.Packet{}))
	}
	woken := make(chan struct{})
	go func() {
		cc.awaitSlot(cl, time.Minute)
		close(woken)
	}()
	for registered := false; !registered; time.Sleep(time.Millisecond) {
		cc.wmu.Lock()
		registered = cc.room.slot != nil
		cc.wmu.Unlock()
	}
	for range 9 { // as mochi's writer takes packets: the channel is now below half
		out.Recv()
	}
	if _, err := cc.Write([]byte{packets.Pingresp << 4, 0}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher waiting for a write slot was not woken by Write")
	}
}

// mochiOutbound is cl's write channel, which mochi does not export; tests
// only fill and empty it as mochi's publishers and writer do.
func mochiOutbound(cl *mqtt.Client) reflect.Value {
	f := reflect.ValueOf(&cl.State).Elem().FieldByIndex(outboundField)
	return reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
}
