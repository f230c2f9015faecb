package controller

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/keys"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// A gateway's link history: registration, stream opened, a second stream
// opened and the first ending while it lives (still up), the last one
// ending (down); newest first, bounded to LinkHistoryMax, and forgotten
// with the gateway.
func TestGatewayLinkHistory(t *testing.T) {
	c, _ := newCounting(t)
	ctx := context.Background()
	const gw = "gw-1"
	if _, _, err := c.RegisterGateway(ctx, &v1.Gateway{Name: gw, UnderlayAddress: "192.0.2.1"}, Agent{}); err != nil {
		t.Fatal(err)
	}
	// Registering again while up is no transition.
	if _, _, err := c.RegisterGateway(ctx, &v1.Gateway{Name: gw, UnderlayAddress: "192.0.2.1"}, Agent{}); err != nil {
		t.Fatal(err)
	}
	s1, s2 := keys.StreamID("self", 1), keys.StreamID("self", 2)
	for _, s := range []string{s1, s2} {
		if err := c.OpenGatewayStream(ctx, gw, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CloseGatewayStream(ctx, gw, s1, v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_CLOSED); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseGatewayStream(ctx, gw, s2, v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_ENDED); err != nil {
		t.Fatal(err)
	}
	if st := gatewayState(t, c, gw); st != v1.GatewayState_GATEWAY_STATE_DOWN {
		t.Fatalf("gateway %v after its last stream ended", st)
	}
	got, total := c.GatewayLinks(gw)
	want := []string{
		"GATEWAY_STATE_DOWN GATEWAY_LINK_REASON_STREAM_ENDED 2",
		"GATEWAY_STATE_UP GATEWAY_LINK_REASON_STREAM_CLOSED 1",
		"GATEWAY_STATE_UP GATEWAY_LINK_REASON_STREAM_OPENED 2",
		"GATEWAY_STATE_UP GATEWAY_LINK_REASON_STREAM_OPENED 1",
		"GATEWAY_STATE_UP GATEWAY_LINK_REASON_REGISTERED 0",
	}
	if total != int64(len(want)) || len(got) != len(want) {
		t.Fatalf("%d events (total %d), want %d: %v", len(got), total, len(want), got)
	}
	for i, e := range got {
		if s := fmt.Sprint(e.State, " ", e.Reason, " ", e.Stream); s != want[i] {
			t.Errorf("event %d: %s, want %s", i, s, want[i])
		}
		if i > 0 && e.Time.After(got[i-1].Time) {
			t.Errorf("event %d is newer than event %d", i, i-1)
		}
	}

	// Bounded: the last LinkHistoryMax, newest first.
	for n := uint64(3); n < 3+2*LinkHistoryMax; n++ {
		s := keys.StreamID("self", n)
		if err := c.OpenGatewayStream(ctx, gw, s); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseGatewayStream(ctx, gw, s, v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_ENDED); err != nil {
			t.Fatal(err)
		}
	}
	got, total = c.GatewayLinks(gw)
	if len(got) != LinkHistoryMax || total != int64(len(want)+4*LinkHistoryMax) {
		t.Fatalf("%d events kept (total %d), want %d (total %d)", len(got), total, LinkHistoryMax, len(want)+4*LinkHistoryMax)
	}
	last := uint64(2 + 2*LinkHistoryMax)
	if got[0].Stream != last || got[0].State != v1.GatewayState_GATEWAY_STATE_DOWN || got[1].Stream != last || got[1].Reason != v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_OPENED {
		t.Errorf("newest events %+v %+v, want stream %d's end and opening", got[0], got[1], last)
	}
	if oldest := got[LinkHistoryMax-1]; oldest.Stream != last-LinkHistoryMax/2+1 {
		t.Errorf("oldest event kept is of stream %d, want %d", oldest.Stream, last-LinkHistoryMax/2+1)
	}

	if _, err := c.DeleteGateway(ctx, gw); err != nil {
		t.Fatal(err)
	}
	if got, total := c.GatewayLinks(gw); len(got) != 0 || total != 0 {
		t.Errorf("a deleted gateway keeps %d events", len(got))
	}
}

// BenchmarkLinkHistoryMemory fills the link history of 10,000 gateways to
// its bound and reports the heap it holds per gateway and in all.
func BenchmarkLinkHistoryMemory(b *testing.B) {
	const gateways = 10000
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		h := &linkHistory{}
		names := make([]string, gateways)
		for i := range names {
			names[i] = fmt.Sprintf("gw-%05d", i)
		}
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range 2 * LinkHistoryMax {
			for _, gw := range names {
				h.record(gw, v1.GatewayState_GATEWAY_STATE_UP, v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_OPENED, keys.StreamID("0123456789abcdef", uint64(i)))
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held := float64(after.HeapAlloc) - float64(before.HeapAlloc)
		b.ReportMetric(held/gateways, "B/gateway")
		b.ReportMetric(held/(1<<20), "MiB/10k-gateways")
		runtime.KeepAlive(h)
		runtime.KeepAlive(names)
	}
}
