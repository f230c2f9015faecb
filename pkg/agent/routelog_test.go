package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func testRoute(i int, label uint32) *v1.Route {
	return &v1.Route{Network: "red", Prefix: fmt.Sprintf("10.%d.%d.%d/32", 100+i>>16, byte(i>>8), byte(i)), RouteDistinguisher: "192.0.2.9:1",
		Label: label, NextHop: "192.0.2.9", RouteTargets: []string{"target:65000:1"}, Endpoint: fmt.Sprint("ep", i)}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestRouteLogWritesChangesOnly: with 10,000 routes held, one route change
// appends a few hundred bytes to the route log (the whole-file format
// rewrote the table, 2.9 MB); an identical snapshot appends only the resume
// point; every start reads back exactly what was held, a torn last line
// included.
func TestRouteLogWritesChangesOnly(t *testing.T) {
	const n = 10_000
	dir := t.TempDir()
	path := filepath.Join(dir, routeLogFile)
	ctx := context.Background()
	snap := &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_SNAPSHOT, Revision: 10, ControllerId: "ctl"}
	for i := range n {
		snap.Put = append(snap.Put, testRoute(i, uint32(16+i)))
	}
	c, stop := runCore(t, dir)
	if err := c.applyRoutes(ctx, "a:1", snap); err != nil {
		t.Fatal(err)
	}
	stop()
	whole := fileSize(t, path)

	held := func(wantRev int64, wantLabel uint32) {
		t.Helper()
		c, st, err := NewCore(Config{Gateway: "gw", StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		_ = c
		sr := st.sessions["a:1"]
		if sr == nil || len(sr.routes) != n || sr.revision != wantRev || sr.controllerID != "ctl" {
			t.Fatalf("after a restart: %+v", sr)
		}
		if r := sr.routes[keyOf(testRoute(7, 0))]; r == nil || r.label != wantLabel {
			t.Fatalf("route 7 after a restart: %v", r)
		}
	}
	held(10, 23)

	// One route changes.
	c, stop = runCore(t, dir)
	before := fileSize(t, path)
	if err := c.applyRoutes(ctx, "a:1", &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_CHANGES, Revision: 11, ControllerId: "ctl",
		Put: []*v1.Route{testRoute(7, 99)}}); err != nil {
		t.Fatal(err)
	}
	stop()
	one := fileSize(t, path) - before
	fmt.Printf("route log: %d routes held take %d bytes; one route change appends %d bytes (a whole rewrite would write %d)\n", n, whole, one, whole)
	if one <= 0 || one > 1024 {
		t.Fatalf("one route change appended %d bytes", one)
	}
	held(11, 99)

	// The same table again as a snapshot (a resume that kept nothing):
	// only the resume point is appended.
	c, stop = runCore(t, dir)
	before = fileSize(t, path)
	snap.Revision = 12
	snap.Put[7] = testRoute(7, 99)
	if err := c.applyRoutes(ctx, "a:1", snap); err != nil {
		t.Fatal(err)
	}
	stop()
	if same := fileSize(t, path) - before; same > 128 {
		t.Fatalf("an identical snapshot appended %d bytes", same)
	}
	held(12, 99)

	// A crash mid-append leaves a torn line: ignored.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"c":"a:1","put":{"network":"re`)
	f.Close()
	held(12, 99)
}

// TestPackagedStateFixture: the agent state the package test (scripts/package-test.sh)
// puts in /var/lib/iotfabric/agent, to check that upgrades keep it, is in the formats
// this agent reads: its endpoint and label, and its route in routes.log.
func TestPackagedStateFixture(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{stateFile, routeLogFile} {
		b, err := os.ReadFile(filepath.Join("testdata", "packaged-state", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, s, err := NewCore(Config{Gateway: "gw-1", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s.labels[100] != "pod-a-eth0" || s.eps["pod-a-eth0"] == nil || s.p.Tables["sensors"] != 7001 {
		t.Errorf("endpoints.json: labels %v, endpoints %v, tables %v", s.labels, s.eps, s.p.Tables)
	}
	sr := s.sessions["127.0.0.1:50051"]
	if sr == nil || sr.controllerID != "ctl-1" || sr.revision != 65536 || len(sr.routes) != 1 {
		t.Fatalf("routes.log: sessions %+v", s.sessions)
	}
	for _, r := range sr.routes {
		if !r.ok || r.prefix().String() != "10.10.0.18/32" || r.label != 100 {
			t.Errorf("routes.log: route %+v", r.remote())
		}
	}
}
