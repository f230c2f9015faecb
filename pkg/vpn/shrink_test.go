package vpn

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/iotfabric/iotfabric/internal/heapstat"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// A flood of received routes, once withdrawn, leaves the table's heap where
// it was before: the maps that held the flood are built again when it goes
// (a Go map keeps the room of its peak, about 5 MB for 20,000 routes).
func TestReceivedFloodGivesMemoryBack(t *testing.T) {
	tb := NewTable(64512, nil)
	tb.PutNetwork(&v1.VirtualNetwork{Name: "edge", Id: 1, ImportRouteTargets: []string{"target:65000:1"}})
	tb.Flush()
	const n = 20000
	evs := make([]bgp.RouteEvent, n)
	for i := range evs {
		evs[i] = bgp.RouteEvent{Peer: netip.MustParseAddr("10.9.9.9"), Route: bgp.Route{
			Prefix: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256)),
			RD:     bgp.RD{Addr: netip.MustParseAddr("192.0.2.99"), Index: 1}, Label: 50,
			NextHop: netip.MustParseAddr("192.0.2.99"), RouteTargets: []bgp.RouteTarget{{ASN: 65000, Value: 1}}}}
	}
	flood := func() {
		for i := range evs {
			evs[i].Withdraw = false
		}
		tb.Received(evs)
		tb.Flush()
		if c := tb.RouteCount("edge"); c != n {
			t.Fatalf("%d routes imported, want %d", c, n)
		}
		for i := range evs {
			evs[i].Withdraw = true
		}
		// withdrawn in batches, as a peer's updates come
		for i := 0; i < n; i += 2000 {
			tb.Received(evs[i : i+2000])
			tb.Flush()
		}
		if c := tb.RouteCount("edge"); c != 0 {
			t.Fatalf("%d routes left after the withdrawal", c)
		}
	}
	before := heapstat.Live()
	flood()
	after := heapstat.Live()
	t.Logf("table heap: %d KB before the flood, %d KB after it was withdrawn", before>>10, after>>10)
	if after > before+512<<10 {
		t.Errorf("heap %d KB after a flood of %d routes was withdrawn, %d KB before", after>>10, n, before>>10)
	}
	runtime.KeepAlive(tb)
	runtime.KeepAlive(evs)
}
