package bgptest

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BIRD binaries (Debian's bird2 package).
var (
	BIRDBin = "bird"
	BIRDC   = "birdc"
)

// BIRDRoute is a VPN route BIRD originates (a static route in its VPN table).
type BIRDRoute struct {
	RD      string // "192.0.2.20:1"
	Prefix  netip.Prefix
	NextHop netip.Addr
	Label   uint32
}

// BIRDNeighbor is one BGP session of BIRD.
type BIRDNeighbor struct {
	Address  netip.Addr
	ASN      uint32
	Password string
	// RouteTargets are added to every route BIRD sends on this session,
	// as "target:<asn>:<n>" strings.
	RouteTargets []string
}

// BIRDConfig is what StartBIRD writes into bird.conf.
type BIRDConfig struct {
	ASN       uint32
	RouterID  netip.Addr
	Local     netip.Addr // source address of the sessions
	Neighbors []BIRDNeighbor
	Routes    []BIRDRoute
	// StaticDisabled starts the static protocols disabled: `birdc enable
	// static4` then injects the routes into a running BIRD.
	StaticDisabled bool
	// Include, if set, is a file of more static VPNv4 routes (one
	// `route <rd> <prefix> via <nh> mpls <label>;` per line), for large tables.
	Include string
}

// BIRD is a running bird in a namespace.
type BIRD struct {
	NS     *Netns
	Dir    string
	Config BIRDConfig
	d      *daemon
}

// Render returns bird.conf.
func (c BIRDConfig) Render(logPath string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nlog %q all;\nvpn4 table vpntab4;\nvpn6 table vpntab6;\nprotocol device {}\n", c.RouterID, logPath)
	disabled := ""
	if c.StaticDisabled {
		disabled = "  disabled;\n"
	}
	fmt.Fprintf(&b, "protocol static static4 {\n%s  vpn4 { table vpntab4; };\n", disabled)
	for _, r := range c.Routes {
		if r.Prefix.Addr().Is4() {
			fmt.Fprintf(&b, "  route %s %s via %s mpls %d;\n", r.RD, r.Prefix, r.NextHop, r.Label)
		}
	}
	if c.Include != "" {
		fmt.Fprintf(&b, "  include %q;\n", c.Include)
	}
	b.WriteString("}\nprotocol static static6 {\n  vpn6 { table vpntab6; };\n")
	for _, r := range c.Routes {
		if r.Prefix.Addr().Is6() {
			fmt.Fprintf(&b, "  route %s %s via %s mpls %d;\n", r.RD, r.Prefix, r.NextHop, r.Label)
		}
	}
	b.WriteString("}\n")
	for i, n := range c.Neighbors {
		var adds strings.Builder
		for _, rt := range n.RouteTargets {
			parts := strings.Split(strings.TrimPrefix(rt, "target:"), ":")
			if len(parts) == 2 {
				fmt.Fprintf(&adds, " bgp_ext_community.add((rt, %s, %s));", parts[0], parts[1])
			}
		}
		fmt.Fprintf(&b, "filter export%d {%s accept; }\n", i, adds.String())
		fmt.Fprintf(&b, "protocol bgp peer%d {\n  local %s as %d;\n  neighbor %s as %d;\n  connect retry time 1;\n", i, c.Local, c.ASN, n.Address, n.ASN)
		if n.Password != "" {
			fmt.Fprintf(&b, "  password %q;\n", n.Password)
		}
		fmt.Fprintf(&b, "  vpn4 mpls { table vpntab4; import all; export filter export%d; next hop keep; };\n", i)
		// VPNv6 routes over an IPv4 session carry an IPv4-mapped next hop:
		// BIRD accepts it only with extended next hop.
		fmt.Fprintf(&b, "  vpn6 mpls { table vpntab6; import all; export filter export%d; next hop keep; extended next hop on; };\n", i)
		b.WriteString("}\n")
	}
	return b.String()
}

// StartBIRD starts bird in ns with cfg and waits until birdc answers.
// t.Cleanup stops it.
func StartBIRD(t testing.TB, ns *Netns, cfg BIRDConfig) *BIRD {
	t.Helper()
	b, err := startBIRD(t, ns, cfg)
	if err != nil {
		t.Fatalf("bgptest: BIRD: %v", err)
	}
	return b
}

func startBIRD(t testing.TB, ns *Netns, cfg BIRDConfig) (*BIRD, error) {
	dir := tempDir(t, "iotfabric-bird-")
	b := &BIRD{NS: ns, Dir: dir, Config: cfg}
	t.Cleanup(b.Stop)
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(cfg.Render(filepath.Join(dir, "bird.log"))), 0o644); err != nil {
		return nil, err
	}
	var err error
	b.d, err = startDaemon(ns, dir, "bird", BIRDBin, "-f", "-c", conf, "-s", b.sock(), "-P", filepath.Join(dir, "bird.pid"))
	if err != nil {
		return nil, err
	}
	err = Eventually(context.Background(), 20*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		if err := b.d.exited(); err != nil {
			return fmt.Errorf("%w: %s", err, tail(filepath.Join(dir, "bird.out"), 2000))
		}
		_, err := b.Birdc(ctx, "show status")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bird not ready: %w", err)
	}
	return b, nil
}

func (b *BIRD) sock() string { return filepath.Join(b.Dir, "bird.ctl") }

// Stop stops bird.
func (b *BIRD) Stop() { b.d.stop() }

// Birdc runs one birdc command and returns its output.
func (b *BIRD) Birdc(ctx context.Context, cmd string) (string, error) {
	c := exec.CommandContext(ctx, BIRDC, append([]string{"-s", b.sock()}, strings.Fields(cmd)...)...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("birdc %q: %w: %s", cmd, err, out.String())
	}
	return out.String(), nil
}

// Established reports whether session i (peer<i>) is Established.
func (b *BIRD) Established(ctx context.Context, i int) error {
	out, err := b.Birdc(ctx, fmt.Sprintf("show protocols peer%d", i))
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Established") {
		return fmt.Errorf("BIRD peer%d not established: %s", i, out)
	}
	return nil
}

// BIRDPath is a route in BIRD's VPN table as `show route all` prints it.
type BIRDPath struct {
	RD           string
	Prefix       netip.Prefix
	Label        uint32
	NextHop      netip.Addr
	ExtCommunity string // BIRD's text, e.g. "(rt, 64512, 8000001) (generic, 0x30c0000, 0xd)"
}

var (
	birdRouteLine = regexp.MustCompile(`^(\S+) (\S+/\d+)\s+(?:mpls (\d+)\s+)?`)
	birdNextHop   = regexp.MustCompile(`BGP\.next_hop: (\S+)`)
	birdExtComm   = regexp.MustCompile(`BGP\.ext_community: (.*)`)
	birdLabel     = regexp.MustCompile(`(?:BGP\.mpls_label_stack:|mpls) (\d+)`)
)

// VPNTable returns the routes of BIRD's vpn4 ("4") or vpn6 ("6") table
// learned over BGP, keyed by "<rd> <prefix>".
func (b *BIRD) VPNTable(ctx context.Context, af string) (map[string]BIRDPath, error) {
	out, err := b.Birdc(ctx, "show route table vpntab"+af+" all")
	if err != nil {
		return nil, err
	}
	res := map[string]BIRDPath{}
	var cur *BIRDPath
	flush := func() {
		if cur != nil && cur.NextHop.IsValid() {
			res[cur.RD+" "+cur.Prefix.String()] = *cur
		}
		cur = nil
	}
	for _, l := range strings.Split(out, "\n") {
		if m := birdRouteLine.FindStringSubmatch(l); m != nil && !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, " ") {
			flush()
			rd := m[1]
			if i := strings.Index(rd, ":"); i >= 0 && strings.Count(rd, ":") == 2 {
				rd = rd[i+1:] // BIRD may print the RD type first ("1:a.b.c.d:n")
			}
			p, err := netip.ParsePrefix(m[2])
			if err != nil {
				continue
			}
			cur = &BIRDPath{RD: rd, Prefix: p}
			if m[3] != "" {
				n, _ := strconv.ParseUint(m[3], 10, 32)
				cur.Label = uint32(n)
			}
			continue
		}
		if cur == nil {
			continue
		}
		if m := birdNextHop.FindStringSubmatch(l); m != nil {
			a, err := netip.ParseAddr(m[1])
			if err == nil {
				cur.NextHop = a.Unmap()
			}
		}
		if m := birdLabel.FindStringSubmatch(l); m != nil && cur.Label == 0 {
			n, _ := strconv.ParseUint(m[1], 10, 32)
			cur.Label = uint32(n)
		}
		if m := birdExtComm.FindStringSubmatch(l); m != nil {
			cur.ExtCommunity = strings.TrimSpace(m[1])
		}
	}
	flush()
	return res, nil
}
