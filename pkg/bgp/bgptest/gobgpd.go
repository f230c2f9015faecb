package bgptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gobgpd binaries (Debian's gobgpd package).
var (
	GoBGPDBin = "gobgpd"
	GoBGP     = "gobgp"
)

// GoBGPDNeighbor is one neighbour of gobgpd.
type GoBGPDNeighbor struct {
	Address  netip.Addr
	ASN      uint32
	Password string
}

// GoBGPDConfig is what StartGoBGPD writes into gobgpd.toml.
type GoBGPDConfig struct {
	ASN       uint32
	RouterID  netip.Addr
	Neighbors []GoBGPDNeighbor
}

// GoBGPD is a running gobgpd in a namespace, driven through the gobgp CLI
// over a unix socket.
type GoBGPD struct {
	NS     *Netns
	Dir    string
	Config GoBGPDConfig
	d      *daemon
}

// Render returns gobgpd's TOML configuration.
func (c GoBGPDConfig) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[global.config]\n  as = %d\n  router-id = %q\n", c.ASN, c.RouterID)
	for _, n := range c.Neighbors {
		fmt.Fprintf(&b, "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = %q\n    peer-as = %d\n", n.Address, n.ASN)
		if n.Password != "" {
			fmt.Fprintf(&b, "    auth-password = %q\n", n.Password)
		}
		b.WriteString("  [neighbors.timers.config]\n    connect-retry = 1\n")
		for _, af := range []string{"l3vpn-ipv4-unicast", "l3vpn-ipv6-unicast"} {
			fmt.Fprintf(&b, "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = %q\n", af)
		}
	}
	return b.String()
}

// StartGoBGPD starts gobgpd in ns and waits until its API answers.
// t.Cleanup stops it.
func StartGoBGPD(t testing.TB, ns *Netns, cfg GoBGPDConfig) *GoBGPD {
	t.Helper()
	g, err := startGoBGPD(t, ns, cfg)
	if err != nil {
		t.Fatalf("bgptest: gobgpd: %v", err)
	}
	return g
}

func startGoBGPD(t testing.TB, ns *Netns, cfg GoBGPDConfig) (*GoBGPD, error) {
	dir := tempDir(t, "iotfabric-gobgpd-")
	g := &GoBGPD{NS: ns, Dir: dir, Config: cfg}
	t.Cleanup(g.Stop)
	conf := filepath.Join(dir, "gobgpd.toml")
	if err := os.WriteFile(conf, []byte(cfg.Render()), 0o644); err != nil {
		return nil, err
	}
	var err error
	g.d, err = startDaemon(ns, dir, "gobgpd", GoBGPDBin, "-f", conf, "-p", "--pprof-disable", "--api-hosts", "unix://"+g.sock())
	if err != nil {
		return nil, err
	}
	err = Eventually(context.Background(), 20*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		if err := g.d.exited(); err != nil {
			return fmt.Errorf("%w: %s", err, tail(filepath.Join(dir, "gobgpd.out"), 2000))
		}
		_, err := g.CLI(ctx, "global")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("gobgpd not ready: %w", err)
	}
	return g, nil
}

func (g *GoBGPD) sock() string { return filepath.Join(g.Dir, "gobgp.sock") }

// Stop stops gobgpd.
func (g *GoBGPD) Stop() { g.d.stop() }

// CLI runs the gobgp CLI against this gobgpd.
func (g *GoBGPD) CLI(ctx context.Context, args ...string) ([]byte, error) {
	c := exec.CommandContext(ctx, GoBGP, append([]string{"--target", "unix://" + g.sock()}, args...)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return out, fmt.Errorf("gobgp %q: %w: %s", args, err, stderr.String())
	}
	return out, nil
}

// AddVPNRoute originates a VPN route with route targets ("64512:8000001")
// and an encapsulation ("mpls-in-udp", "mpls-in-gre", "vxlan"; "" for none).
func (g *GoBGPD) AddVPNRoute(ctx context.Context, rd string, prefix netip.Prefix, label uint32, nextHop netip.Addr, rts []string, encap string) error {
	fam := "vpnv4"
	nh := nextHop.String()
	if prefix.Addr().Is6() {
		fam = "vpnv6"
		if nextHop.Is4() {
			nh = netip.AddrFrom16(nextHop.As16()).String()
		}
	}
	args := []string{"global", "rib", "-a", fam, "add", prefix.String(), "label", strconv.Itoa(int(label)), "rd", rd}
	if len(rts) > 0 {
		args = append(args, append([]string{"rt"}, rts...)...)
	}
	args = append(args, "nexthop", nh)
	if encap != "" {
		args = append(args, "encap", encap)
	}
	_, err := g.CLI(ctx, args...)
	return err
}

// DeleteVPNRoute withdraws a route added with AddVPNRoute.
func (g *GoBGPD) DeleteVPNRoute(ctx context.Context, rd string, prefix netip.Prefix, label uint32) error {
	fam := "vpnv4"
	if prefix.Addr().Is6() {
		fam = "vpnv6"
	}
	_, err := g.CLI(ctx, "global", "rib", "-a", fam, "del", prefix.String(), "label", strconv.Itoa(int(label)), "rd", rd)
	return err
}

// GoBGPDPath is one path of gobgpd's global RIB.
type GoBGPDPath struct {
	NLRI    string // "<rd>:<prefix>"
	Label   uint32
	NextHop netip.Addr
	// ExtCommunities are gobgp's strings, e.g. "64512:8000001" and "encap: MPLS-in-UDP".
	ExtCommunities []string
}

// RIB returns gobgpd's global RIB for "vpnv4" or "vpnv6", keyed by "<rd>:<prefix>".
func (g *GoBGPD) RIB(ctx context.Context, family string) (map[string]GoBGPDPath, error) {
	out, err := g.CLI(ctx, "-j", "global", "rib", "-a", family)
	if err != nil {
		return nil, err
	}
	var raw map[string][]struct {
		NLRI struct {
			Prefix string          `json:"prefix"`
			Labels []uint32        `json:"labels"`
			RD     json.RawMessage `json:"rd"`
		} `json:"nlri"`
		Attrs []json.RawMessage `json:"attrs"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("gobgp rib JSON: %w: %s", err, out)
	}
	res := map[string]GoBGPDPath{}
	for key, paths := range raw {
		if len(paths) == 0 {
			continue
		}
		p := GoBGPDPath{NLRI: key}
		if len(paths[0].NLRI.Labels) > 0 {
			p.Label = paths[0].NLRI.Labels[0]
		}
		for _, a := range paths[0].Attrs {
			var attr struct {
				Type    int             `json:"type"`
				Nexthop string          `json:"nexthop"`
				Value   json.RawMessage `json:"value"`
			}
			if json.Unmarshal(a, &attr) != nil {
				continue
			}
			switch attr.Type {
			case 14: // MP_REACH_NLRI
				if nh, err := netip.ParseAddr(attr.Nexthop); err == nil {
					p.NextHop = nh.Unmap()
				}
			case 16: // EXTENDED COMMUNITIES
				var ecs []map[string]any
				if json.Unmarshal(attr.Value, &ecs) == nil {
					for _, ec := range ecs {
						p.ExtCommunities = append(p.ExtCommunities, extCommunityString(ec))
					}
				}
			}
		}
		res[key] = p
	}
	return res, nil
}

func extCommunityString(ec map[string]any) string {
	if tt, ok := ec["tunnel_type"]; ok {
		return fmt.Sprintf("encap:%v", tt)
	}
	if as, ok := ec["as"]; ok {
		return fmt.Sprintf("%v:%v", as, ec["local_admin"])
	}
	b, _ := json.Marshal(ec)
	return string(b)
}
