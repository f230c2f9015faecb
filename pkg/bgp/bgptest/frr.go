package bgptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FRR binaries (Debian's frr package).
var (
	FRRDir = "/usr/lib/frr"
	Vtysh  = "vtysh"
)

// FRRNeighbor is one neighbour in FRR's configuration.
type FRRNeighbor struct {
	Address  netip.Addr
	ASN      uint32
	Password string
	// Passive makes FRR wait for the neighbour to connect.
	Passive bool
	// RouteReflectorClient reflects iBGP routes to this neighbour.
	RouteReflectorClient bool
}

// FRRConfig is what StartFRR writes into bgpd's configuration.
type FRRConfig struct {
	ASN       uint32
	RouterID  netip.Addr
	Neighbors []FRRNeighbor
	// GracefulRestart turns on restarting-speaker mode (FRR is a helper by
	// default either way).
	GracefulRestart bool
	// RestartTime is the graceful-restart time FRR announces (0: FRR's 120 s).
	RestartTime int
	// DebugUpdates logs every received UPDATE into bgpd's log file (see
	// FRR.Log): the way to tell a withdrawal from a refresh.
	DebugUpdates bool
	// Extra lines inside `router bgp`, after the neighbours.
	Extra string
	// Networks are VPN routes FRR originates itself (static, from its
	// `address-family ipv4|ipv6 vpn` network statements).
	Networks []FRRNetwork
}

// FRRNetwork is a VPN route FRR originates.
type FRRNetwork struct {
	Prefix       netip.Prefix
	RD           string // "192.0.2.40:1"
	Label        uint32
	RouteTargets []string // "64512:8000001"
}

// FRR is a running zebra + bgpd pair in a namespace.
type FRR struct {
	NS     *Netns
	Dir    string
	Config FRRConfig
	zebra  *daemon
	bgpd   *daemon
}

// Render returns bgpd's configuration text.
func (c FRRConfig) Render(hostname string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "hostname %s\nlog file %s debugging\n", hostname, "{{LOG}}")
	if c.DebugUpdates {
		b.WriteString("debug bgp updates in\ndebug bgp neighbor-events\n")
	}
	// Route-maps first: a network statement naming a route-map that does
	// not exist yet yields no route.
	for i, n := range c.Networks {
		if len(n.RouteTargets) > 0 {
			fmt.Fprintf(&b, "route-map net%d permit 10\n set extcommunity rt %s\n!\n", i, strings.Join(n.RouteTargets, " "))
		}
	}
	fmt.Fprintf(&b, "!\nrouter bgp %d\n bgp router-id %s\n no bgp default ipv4-unicast\n no bgp ebgp-requires-policy\n no bgp network import-check\n", c.ASN, c.RouterID)
	if c.GracefulRestart {
		b.WriteString(" bgp graceful-restart\n")
	}
	if c.RestartTime > 0 {
		fmt.Fprintf(&b, " bgp graceful-restart restart-time %d\n", c.RestartTime)
	}
	for _, n := range c.Neighbors {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s timers connect 1\n", n.Address, n.ASN, n.Address)
		if n.Password != "" {
			fmt.Fprintf(&b, " neighbor %s password %s\n", n.Address, n.Password)
		}
		if n.Passive {
			fmt.Fprintf(&b, " neighbor %s passive\n", n.Address)
		}
	}
	if c.Extra != "" {
		b.WriteString(c.Extra)
		if !strings.HasSuffix(c.Extra, "\n") {
			b.WriteByte('\n')
		}
	}
	for _, af := range []string{"ipv4 vpn", "ipv6 vpn"} {
		fmt.Fprintf(&b, " address-family %s\n", af)
		for i, n := range c.Networks {
			if n.Prefix.Addr().Is4() != (af == "ipv4 vpn") {
				continue
			}
			fmt.Fprintf(&b, "  network %s rd %s label %d", n.Prefix, n.RD, n.Label)
			if len(n.RouteTargets) > 0 {
				fmt.Fprintf(&b, " route-map net%d", i)
			}
			b.WriteByte('\n')
		}
		for _, n := range c.Neighbors {
			fmt.Fprintf(&b, "  neighbor %s activate\n", n.Address)
			if n.RouteReflectorClient {
				fmt.Fprintf(&b, "  neighbor %s route-reflector-client\n", n.Address)
			}
		}
		b.WriteString(" exit-address-family\n")
	}
	b.WriteString("!\n")
	return b.String()
}

// StartFRR starts zebra and bgpd in ns with cfg and waits until vtysh
// answers. t.Cleanup stops them.
func StartFRR(t testing.TB, ns *Netns, cfg FRRConfig) *FRR {
	t.Helper()
	f, err := startFRR(t, ns, cfg)
	if err != nil {
		t.Fatalf("bgptest: FRR: %v", err)
	}
	return f
}

func startFRR(t testing.TB, ns *Netns, cfg FRRConfig) (*FRR, error) {
	dir := tempDir(t, "iotfabric-frr-")
	f := &FRR{NS: ns, Dir: dir, Config: cfg}
	t.Cleanup(f.Stop)
	name := ns.Name
	if name == "" {
		name = "self"
	}
	conf := strings.ReplaceAll(cfg.Render(name), "{{LOG}}", filepath.Join(dir, "frr.log"))
	if err := os.WriteFile(filepath.Join(dir, "frr.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if err := chownFRR(dir); err != nil {
		return nil, err
	}
	common := func(d string) []string {
		return []string{"-f", filepath.Join(dir, "frr.conf"), "-i", filepath.Join(dir, d+".pid"),
			"-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir, "-u", "frr", "-g", "frr", "-A", "127.0.0.1"}
	}
	var err error
	if f.zebra, err = startDaemon(ns, dir, "zebra", filepath.Join(FRRDir, "zebra"), common("zebra")...); err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := Eventually(ctx, 10*time.Second, 20*time.Millisecond, func(context.Context) error {
		if err := f.zebra.exited(); err != nil {
			return fmt.Errorf("%w: %s", err, tail(filepath.Join(dir, "zebra.out"), 2000))
		}
		_, err := os.Stat(filepath.Join(dir, "zserv.api"))
		return err
	}); err != nil {
		return nil, fmt.Errorf("zebra not ready: %w", err)
	}
	if f.bgpd, err = startDaemon(ns, dir, "bgpd", filepath.Join(FRRDir, "bgpd"), common("bgpd")...); err != nil {
		return nil, err
	}
	if err := Eventually(ctx, 10*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		if err := f.bgpd.exited(); err != nil {
			return fmt.Errorf("%w: %s", err, tail(filepath.Join(dir, "bgpd.out"), 2000))
		}
		_, err := f.Vtysh(ctx, "show bgp summary json")
		return err
	}); err != nil {
		return nil, fmt.Errorf("bgpd not ready: %w", err)
	}
	return f, nil
}

func chownFRR(dir string) error {
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("user frr (is the frr package installed?): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}

// Stop stops bgpd and zebra.
func (f *FRR) Stop() {
	f.bgpd.stop()
	f.zebra.stop()
}

// Kill ends bgpd at once (SIGKILL), without NOTIFICATIONs.
func (f *FRR) Kill() {
	if f.bgpd != nil {
		f.bgpd.cmd.Process.Kill()
		<-f.bgpd.done
	}
}

// RestartBGPD starts bgpd again after Kill, with the same configuration,
// and waits until vtysh answers.
func (f *FRR) RestartBGPD(ctx context.Context) error {
	args := []string{"-f", filepath.Join(f.Dir, "frr.conf"), "-i", filepath.Join(f.Dir, "bgpd.pid"),
		"-z", filepath.Join(f.Dir, "zserv.api"), "--vty_socket", f.Dir, "-u", "frr", "-g", "frr", "-A", "127.0.0.1"}
	d, err := startDaemon(f.NS, f.Dir, "bgpd", filepath.Join(FRRDir, "bgpd"), args...)
	if err != nil {
		return err
	}
	f.bgpd = d
	return Eventually(ctx, 10*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		if err := d.exited(); err != nil {
			return err
		}
		_, err := f.Vtysh(ctx, "show bgp summary json")
		return err
	})
}

// BGPDCPUTime is the CPU time (user + system) bgpd has used so far.
func (f *FRR) BGPDCPUTime() (time.Duration, error) {
	if f.bgpd == nil {
		return 0, fmt.Errorf("bgpd not started")
	}
	return processCPUTime(f.bgpd.cmd.Process.Pid)
}

// Log returns bgpd's log file.
func (f *FRR) Log() string {
	b, _ := os.ReadFile(filepath.Join(f.Dir, "frr.log"))
	return string(b)
}

// Vtysh runs commands through vtysh and returns the output.
func (f *FRR) Vtysh(ctx context.Context, cmds ...string) ([]byte, error) {
	args := []string{"--vty_socket", f.Dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	cmd := exec.CommandContext(ctx, Vtysh, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("vtysh %q: %w: %s%s", cmds, err, stderr.String(), out)
	}
	return out, nil
}

func (f *FRR) vtyshJSON(ctx context.Context, cmd string, v any) error {
	out, err := f.Vtysh(ctx, cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("vtysh %q: decode JSON: %w", cmd, err)
	}
	return nil
}

// FRRPeer is one neighbour of `show bgp <afi> vpn summary json`.
type FRRPeer struct {
	RemoteAs               uint32 `json:"remoteAs"`
	State                  string `json:"state"`
	PfxRcd                 int    `json:"pfxRcd"`
	MsgRcvd                int    `json:"msgRcvd"`
	PfxSnt                 int    `json:"pfxSnt"`
	PeerUptimeMsec         int64  `json:"peerUptimeMsec"`
	ConnectionsEstablished int    `json:"connectionsEstablished"`
	ConnectionsDropped     int    `json:"connectionsDropped"`
}

// Summary returns the neighbours of an address family ("ipv4 vpn" or "ipv6 vpn").
func (f *FRR) Summary(ctx context.Context, afi string) (map[netip.Addr]FRRPeer, error) {
	var s struct {
		Peers map[string]FRRPeer `json:"peers"`
	}
	if err := f.vtyshJSON(ctx, "show bgp "+afi+" summary json", &s); err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]FRRPeer, len(s.Peers))
	for a, p := range s.Peers {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		out[addr] = p
	}
	return out, nil
}

// Prefixes returns how many prefixes FRR holds from peer in afi ("ipv4 vpn"),
// from the summary's counters (cheap at any table size).
func (f *FRR) Prefixes(ctx context.Context, afi string, peer netip.Addr) (int, error) {
	s, err := f.Summary(ctx, afi)
	if err != nil {
		return 0, err
	}
	p, ok := s[peer]
	if !ok {
		return 0, fmt.Errorf("no neighbour %s in %s summary", peer, afi)
	}
	return p.PfxRcd, nil
}

// WaitEstablished waits until FRR's session with peer is Established.
func (f *FRR) WaitEstablished(ctx context.Context, peer netip.Addr, timeout time.Duration) error {
	return Eventually(ctx, timeout, 50*time.Millisecond, func(ctx context.Context) error {
		s, err := f.Summary(ctx, "ipv4 vpn")
		if err != nil {
			return err
		}
		if st := s[peer].State; st != "Established" {
			return fmt.Errorf("FRR: session with %s is %q", peer, st)
		}
		return nil
	})
}

// FRRGracefulRestart is FRR's view of a neighbour's graceful-restart
// capability (from `show bgp neighbors <addr> json`).
type FRRGracefulRestart struct {
	RemoteMode string          // "Restart", "Helper", ...
	RBit       bool            // Restart State bit of the neighbour's last OPEN
	FBit       map[string]bool // per address family ("ipv4Vpn"): Forwarding State bit
}

// GracefulRestart returns FRR's view of peer's graceful-restart capability.
func (f *FRR) GracefulRestart(ctx context.Context, peer netip.Addr) (FRRGracefulRestart, error) {
	var nbrs map[string]struct {
		GR map[string]json.RawMessage `json:"gracefulRestartInfo"`
	}
	if err := f.vtyshJSON(ctx, "show bgp neighbors "+peer.String()+" json", &nbrs); err != nil {
		return FRRGracefulRestart{}, err
	}
	n, ok := nbrs[peer.String()]
	if !ok {
		return FRRGracefulRestart{}, fmt.Errorf("FRR has no neighbour %s", peer)
	}
	out := FRRGracefulRestart{FBit: map[string]bool{}}
	for k, v := range n.GR {
		switch k {
		case "remoteGrMode":
			json.Unmarshal(v, &out.RemoteMode)
		case "rBit":
			json.Unmarshal(v, &out.RBit)
		default:
			var af struct {
				FBit *bool `json:"fBit"`
			}
			if json.Unmarshal(v, &af) == nil && af.FBit != nil {
				out.FBit[k] = *af.FBit
			}
		}
	}
	return out, nil
}

// FRRPath is one path of a VPN route as FRR shows it.
type FRRPath struct {
	RD           string
	Prefix       netip.Prefix
	NextHop      netip.Addr
	Label        uint32
	ExtCommunity string // e.g. "RT:64512:8000001 ET:13"
	Stale        bool
	Valid        bool
	OriginatorID string   // set on reflected routes
	ClusterList  []string // set on reflected routes
	Best         bool
	PeerID       string
}

// VPNTable returns the paths of `show bgp <afi> vpn json` ("ipv4" or
// "ipv6"), keyed by "<rd> <prefix>". The label and extended communities
// come from the detailed per-RD view of the same table.
func (f *FRR) VPNTable(ctx context.Context, afi string) (map[string][]FRRPath, error) {
	var tbl struct {
		Routes struct {
			RDs map[string]json.RawMessage `json:"routeDistinguishers"`
		} `json:"routes"`
	}
	if err := f.vtyshJSON(ctx, "show bgp "+afi+" vpn json", &tbl); err != nil {
		return nil, err
	}
	out := map[string][]FRRPath{}
	for rd, raw := range tbl.Routes.RDs {
		var prefixes map[string]json.RawMessage
		if err := json.Unmarshal(raw, &prefixes); err != nil {
			return nil, fmt.Errorf("RD %s: %w", rd, err)
		}
		for pfx := range prefixes {
			paths, err := f.VPNRoute(ctx, afi, rd, pfx)
			if err != nil {
				return nil, err
			}
			out[rd+" "+pfx] = paths
		}
	}
	return out, nil
}

// VPNRoute returns the paths of one VPN route:
// `show bgp <afi> vpn rd <rd> <prefix> json`.
func (f *FRR) VPNRoute(ctx context.Context, afi, rd, prefix string) ([]FRRPath, error) {
	var byRD map[string]struct {
		Prefix string `json:"prefix"`
		Paths  []struct {
			Valid     bool `json:"valid"`
			Stale     bool `json:"stale"`
			RemoteLbl any  `json:"remoteLabel"`
			Bestpath  *struct {
				Overall bool `json:"overall"`
			} `json:"bestpath"`
			ExtendedCommunity *struct {
				String string `json:"string"`
			} `json:"extendedCommunity"`
			Nexthops []struct {
				IP string `json:"ip"`
			} `json:"nexthops"`
			OriginatorID string `json:"originatorId"`
			ClusterList  *struct {
				List []string `json:"list"`
			} `json:"clusterList"`
			Peer struct {
				PeerID string `json:"peerId"`
			} `json:"peer"`
		} `json:"paths"`
	}
	if err := f.vtyshJSON(ctx, fmt.Sprintf("show bgp %s vpn rd %s %s json", afi, rd, prefix), &byRD); err != nil {
		return nil, err
	}
	detail := byRD[rd]
	pfx, err := netip.ParsePrefix(prefix)
	if err != nil {
		return nil, fmt.Errorf("FRR prefix %q: %w", prefix, err)
	}
	var out []FRRPath
	for _, p := range detail.Paths {
		fp := FRRPath{RD: rd, Prefix: pfx, Valid: p.Valid, Stale: p.Stale, PeerID: p.Peer.PeerID, OriginatorID: p.OriginatorID}
		if p.ClusterList != nil {
			fp.ClusterList = p.ClusterList.List
		}
		if p.Bestpath != nil {
			fp.Best = p.Bestpath.Overall
		}
		if p.ExtendedCommunity != nil {
			fp.ExtCommunity = p.ExtendedCommunity.String
		}
		switch l := p.RemoteLbl.(type) {
		case float64:
			fp.Label = uint32(l)
		case string:
			n, _ := strconv.ParseUint(l, 10, 32)
			fp.Label = uint32(n)
		}
		if len(p.Nexthops) > 0 {
			fp.NextHop, _ = netip.ParseAddr(p.Nexthops[0].IP)
			fp.NextHop = fp.NextHop.Unmap()
		}
		out = append(out, fp)
	}
	return out, nil
}
