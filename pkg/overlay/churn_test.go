package overlay_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

// TestSetDuringVethChurn runs Set over and over while other veths are created
// and deleted in the same namespace, as pods come and go on a busy gateway. A
// link dump the kernel reports as interrupted (NLM_F_DUMP_INTR) must be retried
// where it happens, not fail the Set.
func TestSetDuringVethChurn(t *testing.T) {
	gw := netnstest.New(t, "iofgw")
	overlaytest.Pod(t, gw, "vred1", ap("10.1.0.1"), gwAddr)
	overlaytest.Pod(t, gw, "vred2", ap("10.1.0.2"), gwAddr)
	overlaytest.Pod(t, gw, "vblue1", ap("10.1.0.1"), gwAddr)
	// Enough interfaces that a link dump spans several messages: the kernel
	// flags a dump interrupted only between its parts.
	for i := range 100 {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("idle%d", i)}, PeerName: fmt.Sprintf("idle%dp", i)}
		if err := gw.Handle().LinkAdd(v); err != nil {
			t.Fatalf("veth %d: %v", i, err)
		}
	}
	m := newManager(t, gw, overlay.VRFAuto)
	// Pace the churn on how long a link dump takes here (a slow VM included):
	// a fair share of dumps are interrupted, and a dump retried a few times
	// gets through, as on a busy gateway; a tight loop would interrupt every
	// dump on a slow machine, which no bounded retry gets through.
	var dump time.Duration
	for range 5 {
		start := time.Now()
		if _, err := gw.Handle().LinkList(); err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			t.Fatal(err)
		}
		dump = max(dump, time.Since(start))
	}
	pause := 4 * dump
	t.Logf("a link dump takes up to %v; one veth added and removed every %v", dump, pause)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var churned atomic.Int64
	wg.Go(func() {
		h, err := netlink.NewHandleAt(gw.NsHandle(), unix.NETLINK_ROUTE)
		if err != nil {
			t.Errorf("netlink handle: %v", err)
			return
		}
		defer h.Close()
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("churn%d", i%4)
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
			if err := h.LinkAdd(v); err != nil {
				t.Errorf("add veth %s: %v", name, err)
				return
			}
			if err := h.LinkDel(v); err != nil {
				t.Errorf("delete veth %s: %v", name, err)
				return
			}
			churned.Add(1)
			time.Sleep(pause)
		}
	})
	full, less := localState(), localState()
	less.Networks = less.Networks[:1]
	sets := 0
	// At least 3 s, 50 Sets and 10 churned veths, whichever comes last (a slow
	// VM churns slowly), but never more than 2 minutes.
	start, deadline := time.Now(), time.Now().Add(3*time.Second)
	for time.Now().Before(deadline) || sets < 50 || churned.Load() < 10 {
		if time.Since(start) > 2*time.Minute {
			break
		}
		// Alternate states so every Set reads the links (no fast path).
		s := full
		if sets%2 == 1 {
			s = less
		}
		if err := m.Set(ctx, s); err != nil {
			cancel()
			wg.Wait()
			t.Fatalf("Set %d during veth churn: %v", sets, err)
		}
		sets++
	}
	cancel()
	wg.Wait()
	t.Logf("%d Sets while %d veths were added and removed", sets, churned.Load())
	if n := churned.Load(); n < 10 {
		t.Fatalf("only %d veths churned: the test did not exercise concurrent changes", n)
	}
}
