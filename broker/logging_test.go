package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestMochiLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := newMochiLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	log.Warn("error processing packet", "client", "c1", "pk", "PASSWORD=secret")
	log.Info("mochi mqtt started", "pk", "dump")
	for i := 0; i < 5; i++ {
		log.Warn("client store quota reached", "client", "slow")
	}
	log.Warn("client store quota reached", "client", "other")
	out := buf.String()
	if strings.Contains(out, "error processing packet") {
		t.Errorf("a client's protocol error logged above DEBUG:\n%s", out)
	}
	if strings.Contains(out, "dump") || strings.Contains(out, "secret") {
		t.Errorf("packet dump logged:\n%s", out)
	}
	if !strings.Contains(out, "mochi mqtt started") {
		t.Errorf("other messages lost:\n%s", out)
	}
	if n := strings.Count(out, "client=slow"); n != 1 {
		t.Errorf("quota warning for one client logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "client=other") {
		t.Errorf("another client's warning was throttled too:\n%s", out)
	}
}
