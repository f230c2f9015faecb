package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/server"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// hostileName is a network name no API call accepts; it gets into the
// store the way a foreign writer would put it there, and the console must
// show it as text.
const hostileName = `<script>alert(1)</script>`

// gwcVersion is the version gw-c's agent registers with.
const gwcVersion = "v9.8.7-test"

// fabric is what TestConsole runs against.
type fabric struct {
	ctl   *fabrictest.Controller
	cl    fabrictest.Clients
	peers v1.PeerServiceClient
	ipam  v1.IpamServiceClient
	links v1.GatewayLinkServiceClient
	base  string // the console's URL
	gws   map[string]*fabrictest.Gateway
}

// TestConsole drives the console in a real headless chromium against a real
// controller (with its BGP speaker peering with FRR, real agents, and a
// carbon + graphite-web fed by the IQRF collector): each subtest is a page.
func TestConsole(t *testing.T) {
	bgptest.RequireRoot(t)
	testenv.RequireFile(t, "/usr/lib/frr/bgpd", "frr")
	testenv.RequireProgram(t, "carbon-cache", "graphite-carbon")
	br := startBrowser(t, 1100, 800)
	f := startFabric(t)
	ctx := context.Background()

	t.Run("overview lists the gateways", func(t *testing.T) {
		tb := br.newTab(t, f.base+"/ui/")
		for _, name := range []string{"gw-a", "gw-b", "gw-c"} {
			tb.waitJS(20*time.Second, fmt.Sprintf(`(document.querySelector('#overview-gateways tr[data-gateway=%q]') || {}).textContent?.includes('✔ up')`, name))
		}
		tb.waitJS(10*time.Second, `(document.querySelector('#overview-gateways tr[data-gateway="gw-spare"]') || {}).textContent?.includes('registered')`)
		tb.waitJS(10*time.Second, `document.querySelector('#card-peers').textContent.startsWith('1/2')`)
		if s := tb.text("#alerts"); !strings.Contains(s, "BGP peer") || !strings.Contains(s, "gw-spare") {
			t.Errorf("alerts %q: want the peer down and the gateway that never reported", s)
		}
		tb.screenshot("overview")
	})

	t.Run("an endpoint created through the API shows without a reload", func(t *testing.T) {
		tb := br.newTab(t, f.base+"/ui/#/networks/blue")
		tb.waitJS(10*time.Second, `!!document.querySelector('tr[data-endpoint="ep-a1"]')`)
		tb.waitJS(20*time.Second, `!!document.querySelector('tr[data-route="10.99.0.0/24"]')`) // FRR's, imported
		tb.eval(`window.__loaded = performance.timeOrigin`, nil)
		start := time.Now()
		if _, err := f.cl.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "ep-new", Network: "blue", Gateway: "gw-b", Label: 1001}}); err != nil {
			t.Fatal(err)
		}
		tb.waitJS(10*time.Second, `!!document.querySelector('tr[data-endpoint="ep-new"]')`)
		t.Logf("endpoint on the page %v after CreateEndpoint returned", time.Since(start).Round(time.Millisecond))
		// The agent gives it a label: the route (RD, label, route target) follows.
		tb.waitJS(20*time.Second, `[...document.querySelectorAll('tr[data-route]')].some(r => r.textContent.includes('endpoint ep-new') && /192\.0\.2\.2:\d+/.test(r.textContent))`)
		// The page shows what the API lists for the network.
		list, err := f.cl.EP.ListEndpoints(ctx, &v1.ListEndpointsRequest{Network: "blue"})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, e := range list.Endpoints {
			want = append(want, e.Id)
		}
		var got []string
		tb.eval(`[...document.querySelectorAll('tr[data-endpoint]')].map(r => r.dataset.endpoint).sort()`, &got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("page lists %v, the API %v", got, want)
		}
		var same bool
		tb.eval(`window.__loaded === performance.timeOrigin`, &same)
		if !same {
			t.Error("the page was reloaded")
		}
		tb.screenshot("network")
	})

	t.Run("a stopped agent turns its gateway offline", func(t *testing.T) {
		tb := br.newTab(t, f.base+"/ui/#/gateways/gw-c")
		tb.waitJS(10*time.Second, `document.querySelector('dl.kv')?.textContent.includes('✔ up')`)
		// What the agent registered: through the API and on the page.
		g, err := f.cl.GW.GetGateway(context.Background(), &v1.NameRequest{Name: "gw-c"})
		if err != nil || g.Architecture != runtime.GOARCH || g.AgentVersion != gwcVersion || !slices.Contains(g.KernelFeatures, "bpf-fast-path") {
			t.Errorf("gw-c through the API: %+v %v; want architecture %s, agent version %s, bpf-fast-path", g, err, runtime.GOARCH, gwcVersion)
		}
		tb.waitJS(10*time.Second, fmt.Sprintf(`(t => t.includes('Architecture'+%q) && t.includes('Agent version'+%q) && t.includes('mpls, fou, bpf-fast-path'))(document.querySelector('dl.kv')?.textContent || '')`,
			runtime.GOARCH, gwcVersion))
		// Its tunnels: to gw-a (192.0.2.1), whose endpoint ep-a1 is in blue
		// with gw-c's ep-c1, over the first encapsulation both offer; and
		// toward FRR, whose route blue imports.
		tb.waitJS(20*time.Second, `(t => t.includes('gateway gw-a') && t.includes('mpls-o-udp') && t.includes('blue'))(document.querySelector('#gateway-tunnels tr[data-tunnel="192.0.2.1"]')?.textContent || '')`)
		tb.waitJS(10*time.Second, `[...document.querySelectorAll('#gateway-tunnels tr[data-tunnel]')].some(r => r.textContent.includes('BGP peer'))`)
		links, err := f.links.GetGatewayLinks(ctx, &v1.GetGatewayLinksRequest{Name: "gw-c"})
		if err != nil {
			t.Fatal(err)
		}
		var toA *v1.GatewayTunnel
		for _, tn := range links.Tunnels {
			if tn.Remote == "192.0.2.1" {
				toA = tn
			}
		}
		if toA == nil || toA.RemoteGateway != "gw-a" || toA.Encapsulation != v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP || toA.Routes < 1 || toA.Labels < 1 {
			t.Errorf("gw-c's tunnel to gw-a through the API: %v (tunnels %v)", toA, links.Tunnels)
		}
		// Its link history: up (registered, route stream opened), no offline entry yet.
		tb.waitJS(10*time.Second, `[...document.querySelectorAll('#gateway-links tr[data-link-state="up"]')].some(r => r.textContent.includes('route stream opened'))`)
		var downs int
		tb.eval(`document.querySelectorAll('#gateway-links tr[data-link-state="down"]').length`, &downs)
		f.gws["gw-c"].Stop()
		tb.waitJS(20*time.Second, `document.querySelector('dl.kv')?.textContent.includes('✖ down')`)
		// A new offline entry, newest first, with why.
		tb.waitJS(20*time.Second, fmt.Sprintf(`(rs => rs.length === %d && rs[0] === document.querySelector('#gateway-links tbody tr') && rs[0].textContent.includes('✖ down') && rs[0].textContent.includes('route stream ended'))([...document.querySelectorAll('#gateway-links tr[data-link-state="down"]')])`, downs+1))
		links, err = f.links.GetGatewayLinks(ctx, &v1.GetGatewayLinksRequest{Name: "gw-c"})
		if err != nil || len(links.History) == 0 || links.History[0].State != v1.GatewayState_GATEWAY_STATE_DOWN ||
			links.History[0].Reason != v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_ENDED {
			t.Errorf("gw-c's link history through the API: %v %v", links.GetHistory(), err)
		}
		tb.do(chromedp.EmulateViewport(1100, 1250)) // the whole page, down to the link history
		tb.screenshot("gateway")
		tb.do(chromedp.EmulateViewport(1100, 800))
		tb.goTo("#/overview")
		tb.waitJS(10*time.Second, `(document.querySelector('#overview-gateways tr[data-gateway="gw-c"]') || {}).textContent?.includes('✖ down')`)
		tb.goTo("#/events")
		tb.waitJS(5*time.Second, `document.querySelector('main table')?.textContent.includes('up → down')`)
		tb.screenshot("events")
	})

	t.Run("a hostile network name is text", func(t *testing.T) {
		tb := br.newTab(t, f.base+"/ui/#/networks")
		tb.waitJS(10*time.Second, fmt.Sprintf(`!!document.querySelector('tr[data-network=%q]')`, hostileName))
		if s := tb.text(fmt.Sprintf("tr[data-network=%q] a", hostileName)); s != hostileName {
			t.Errorf("link text %q, want %q", s, hostileName)
		}
		tb.goTo("#/networks/" + strings.NewReplacer("<", "%3C", ">", "%3E", "/", "%2F").Replace(hostileName))
		tb.waitJS(10*time.Second, fmt.Sprintf(`document.querySelector('#network-name')?.textContent === %q`, hostileName))
		var scripts int
		tb.eval(`document.querySelectorAll('main script, main img, main iframe').length`, &scripts)
		if scripts != 0 {
			t.Errorf("%d elements made of data", scripts)
		}
		tb.screenshot("hostile-name")
	})

	t.Run("peers, topology and events", func(t *testing.T) {
		tb := br.newTab(t, f.base+"/ui/#/peers")
		tb.waitJS(20*time.Second, `document.querySelector('main table')?.textContent.includes('✔ established')`)
		tb.screenshot("peers")
		tb.goTo("#/topology")
		tb.waitJS(10*time.Second, `document.querySelectorAll('svg.topo a[data-gateway]').length >= 4`)
		tb.screenshot("topology")
	})

	t.Run("phone and keyboard", func(t *testing.T) {
		tb := br.newTab(t, f.base+"/ui/")
		tb.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(1)))
		tb.waitJS(10*time.Second, `!!document.querySelector('#overview-gateways tr[data-gateway="gw-a"]')`)
		var overflow int
		tb.eval(`document.documentElement.scrollWidth - window.innerWidth`, &overflow)
		if overflow > 0 {
			t.Errorf("page %d px wider than a phone", overflow)
		}
		tb.screenshot("overview-phone")
		// Tab from the top reaches the skip link, then the page links; Enter follows one.
		tb.do(chromedp.KeyEvent("\t"), chromedp.KeyEvent("\t"), chromedp.KeyEvent("\t"), chromedp.KeyEvent("\t"))
		var focused string
		tb.eval(`document.activeElement.getAttribute('href')`, &focused)
		if focused != "#/networks" {
			t.Errorf("after 4 tabs the focus is on %q, want the Networks link", focused)
		}
		tb.do(chromedp.KeyEvent("\r"))
		tb.waitJS(5*time.Second, `location.hash === '#/networks' && document.querySelector('h1').textContent === 'Networks'`)
		// A gateway's page too: its tunnels and link history reflow (the
		// less important columns hidden), nothing wider than the phone;
		// its links are reachable with Tab.
		tb.goTo("#/gateways/gw-a")
		tb.waitJS(10*time.Second, `!!document.querySelector('#gateway-links table') && !!document.querySelector('#gateway-tunnels table a')`)
		tb.eval(`document.documentElement.scrollWidth - window.innerWidth`, &overflow)
		if overflow > 0 {
			t.Errorf("gateway page %d px wider than a phone", overflow)
		}
		var tunnelLinkTabbable bool
		tb.eval(`(a => !!a && a.tabIndex >= 0 && getComputedStyle(a).display !== 'none')(document.querySelector('#gateway-tunnels table a'))`, &tunnelLinkTabbable)
		if !tunnelLinkTabbable {
			t.Error("the tunnels' gateway links are not reachable with the keyboard")
		}
		tb.screenshot("gateway-phone")
	})

	t.Run("sensors draw a chart from graphite", func(t *testing.T) {
		tb := br.newTab(t, f.base+"/ui/#/sensors")
		tb.waitJS(60*time.Second, `[...document.querySelectorAll('section[data-node="iotfabric.gw-a.node2"] svg.chart polyline')].some(p => p.getAttribute('points').split(' ').length >= 3)`)
		if s := tb.text(`section[data-node="iotfabric.gw-a.node2"]`); !strings.Contains(s, "temperature") {
			t.Errorf("node 2: %q", s)
		}
		// A narrower target through the form.
		tb.eval(`document.querySelector('#sensor-target').value = 'iotfabric.gw-a.node2.*'; document.querySelector('form.toolbar button').click(); true`, nil)
		tb.waitJS(10*time.Second, `document.querySelectorAll('section[data-node]').length === 1 && !!document.querySelector('section[data-node="iotfabric.gw-a.node2"] svg.chart')`)
		tb.screenshot("sensors")
	})
}

// startFabric starts FRR, a controller peering with it (and with an address
// nobody answers), three gateways with agents and one without, networks
// (one under a hostile name) and the IQRF pipeline.
func startFabric(t *testing.T) *fabric {
	t.Helper()
	self := bgptest.Self(t)
	frrNS := bgptest.NewNetns(t)
	n := os.Getpid()%200 + 20
	local := netip.MustParsePrefix(fmt.Sprintf("10.96.%d.1/24", n))
	edge := netip.MustParsePrefix(fmt.Sprintf("10.96.%d.2/24", n))
	dead := netip.MustParsePrefix(fmt.Sprintf("10.96.%d.3/24", n))
	bgptest.Connect(t, self, frrNS, local, edge)
	const asn = 64512
	// FRR originates 10.99.0.0/24 with the route target of the first network (id 1).
	frr := bgptest.StartFRR(t, frrNS, bgptest.FRRConfig{ASN: asn, RouterID: edge.Addr(),
		Neighbors: []bgptest.FRRNeighbor{{Address: local.Addr(), ASN: asn}},
		Networks:  []bgptest.FRRNetwork{{Prefix: netip.MustParsePrefix("10.99.0.0/24"), RD: edge.Addr().String() + ":7", Label: 777, RouteTargets: []string{fmt.Sprintf("%d:8000001", asn)}}}})

	carbon := iqrftest.StartCarbon(t)
	startCollector(t, carbon, "iotfabric.gw-a")
	gweb := startGraphiteWeb(t, carbon)

	dir := t.TempDir()
	seeded := false
	tune, base := tuneConsole(t, gweb.URL)
	fc := fabrictest.StartControllerWith(t, &fabrictest.Controller{
		BGP: &bgp.Config{ASN: asn, RouterID: local.Addr(), ListenPort: -1, ConnectRetry: time.Second,
			Peers: []bgp.PeerConfig{{Address: edge.Addr(), ASN: asn}, {Address: dead.Addr(), ASN: asn}}},
		Open: func() (store.Store, error) {
			st, err := bolt.Open(filepath.Join(dir, "state.db"), bolt.Options{NoSync: true})
			if err != nil || seeded {
				return st, err
			}
			seeded = true
			return st, seedHostile(st)
		},
		Tune: tune,
	})
	conn, err := grpc.NewClient(fc.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// The pages expect the session with FRR up: wait for it here, with room
	// for a loaded machine, so a slow start fails with FRR's view of it.
	if err := frr.WaitEstablished(context.Background(), local.Addr(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	f := &fabric{ctl: fc, cl: fc.Dial(), peers: v1.NewPeerServiceClient(conn), ipam: v1.NewIpamServiceClient(conn), links: v1.NewGatewayLinkServiceClient(conn), gws: map[string]*fabrictest.Gateway{}}
	f.base = base
	ctx := context.Background()
	blue, err := f.cl.Net.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "blue", Subnets: []string{"10.20.0.0/16"}}})
	if err != nil {
		t.Fatal(err)
	}
	if blue.AutoRouteTarget != fmt.Sprintf("target:%d:8000001", asn) {
		t.Fatalf("network blue has route target %s; FRR originates for target:%d:8000001", blue.AutoRouteTarget, asn)
	}
	if _, err := f.cl.Net.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "green", Subnets: []string{"10.30.0.0/16"}}}); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"gw-a", "gw-b", "gw-c"} {
		u := fmt.Sprintf("192.0.2.%d", i+1)
		if _, err := f.cl.GW.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: name, UnderlayAddress: u}}); err != nil {
			t.Fatal(err)
		}
		var opts []func(*agent.Options)
		if name == "gw-c" { // what its agent registers shows on its page
			opts = append(opts, func(o *agent.Options) {
				o.Version, o.KernelFeatures = gwcVersion, []string{"mpls", "fou", "bpf-fast-path"}
			})
		}
		f.gws[name] = fabrictest.StartGateway(t, name, netip.MustParseAddr(u), []string{fc.Addr}, false, opts...)
	}
	if _, err := f.cl.GW.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "gw-spare", UnderlayAddress: "192.0.2.9"}}); err != nil {
		t.Fatal(err)
	}
	// An agent's first report is a full sync, which deletes the endpoints of
	// its gateway it does not know: create them once every agent streams
	// (it reports before it streams), or gw-c may lose ep-c1 and with it
	// its network and its tunnels.
	for _, g := range f.gws {
		g.WaitLive(30*time.Second, 1)
	}
	for _, e := range []*v1.Endpoint{{Id: "ep-a1", Network: "blue", Gateway: "gw-a", Label: 1000}, {Id: "ep-c1", Network: "blue", Gateway: "gw-c"}, {Id: "ep-b1", Network: "green", Gateway: "gw-b", Label: 1000}} {
		if _, err := f.cl.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: e}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// tuneConsole returns the configuration of a controller that serves the
// REST API and the console (callers without a certificate: viewer) on a
// loopback port, and the console's URL.
func tuneConsole(t testing.TB, graphite string) (func(*server.Config), string) {
	addr := fmt.Sprintf("127.0.0.1:%d", iqrftest.FreePort(t))
	return func(c *server.Config) {
		c.API.HTTPListen, c.API.HTTPAnonymous = addr, "viewer"
		c.Console.GraphiteURL = graphite
	}, "http://" + addr
}

// seedHostile writes a network under hostileName into the store.
func seedHostile(st store.Store) error {
	b, err := proto.Marshal(&v1.VirtualNetwork{Name: hostileName, Id: 99, Subnets: []string{"10.250.0.0/24"}, AutoRouteTarget: "target:64512:8000099"})
	if err != nil {
		return err
	}
	_, err = st.Txn(context.Background(), nil, []store.Op{store.Put(keys.Network(hostileName), b)})
	return err
}

// TestServedBehindREST: the console is on the REST listener, behind its
// authentication, and off with console.enabled: false.
func TestServedBehindREST(t *testing.T) {
	off := false
	for _, tc := range []struct {
		name      string
		anonymous string
		enabled   *bool
		want      map[string]int
	}{
		{"viewer", "viewer", nil, map[string]int{"/ui/": 200, "/ui/api/summary": 200, "/ui/graphite/render?target=a": 400, "/ui/api/watch?gateways=0": 200}},
		{"no certificate", "none", nil, map[string]int{"/ui/": 401, "/ui/api/summary": 401, "/ui/console.js": 401}},
		{"disabled", "viewer", &off, map[string]int{"/ui/": 404, "/ui/api/summary": 404}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tune, base := tuneConsole(t, "")
			fabrictest.StartControllerWith(t, &fabrictest.Controller{Tune: func(c *server.Config) {
				tune(c)
				c.API.HTTPAnonymous, c.Console.Enabled = tc.anonymous, tc.enabled
			}})
			for path, code := range tc.want {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				if resp.StatusCode != code {
					t.Errorf("%s: %s, want %d", path, resp.Status, code)
				}
				if strings.HasSuffix(path, "watch?gateways=0") {
					b := make([]byte, 512)
					n, _ := io.ReadAtLeast(resp.Body, b, len(": open\n\nevent: gateways\n"))
					if !strings.Contains(string(b[:n]), "event: gateways\ndata: {") {
						t.Errorf("%s: %q", path, b[:n])
					}
				}
				resp.Body.Close()
				cancel()
			}
		})
	}
}
