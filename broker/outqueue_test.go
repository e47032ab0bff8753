package broker

import (
	"bytes"
	"testing"
)

// TestBusyQueueUsesBigChunks: packets queued for a TLS or WebSocket
// connection faster than its writer takes them are gathered into few large
// segments (one WebSocket frame each), in order.
func TestBusyQueueUsesBigChunks(t *testing.T) {
	q := outQueue{keepFrom: chunkSize + 1}
	var want []byte
	for i := range 40 {
		p := bytes.Repeat([]byte{byte(i)}, 4096+20)
		want = append(want, p...)
		q.add(p)
	}
	b := q.take(outBatch{})
	if len(b.segs) > 3 {
		t.Errorf("40 packets of 4 KiB in %d segments; in 32 KiB chunks they took 6", len(b.segs))
	}
	if got := bytes.Join(b.segs, nil); !bytes.Equal(got, want) {
		t.Fatal("the queued bytes are not the packets in order")
	}
	b.release()
}
