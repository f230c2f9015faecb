package rtnl

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/iotfabric/iotfabric/internal/netnstest"
)

// TestKernelRoutes writes routes in batches into a fresh network namespace's
// kernel, reads them back with the filtered dump and deletes them: the
// messages as this platform encodes them (also linux/arm and linux/arm64
// under qemu-user, make test-arm) are what the kernel takes and returns. A
// table number above 2^31 and routes through a veth on both families check
// that 32-bit fields stay unsigned end to end. Root.
func TestKernelRoutes(t *testing.T) {
	a, b := netnstest.New(t, "iofrt"), netnstest.New(t, "iofrt")
	l := netnstest.Connect(t, a, b, netip.MustParsePrefix("10.9.0.1/24"), netip.MustParsePrefix("10.9.0.2/24"))
	link, err := a.Handle().LinkByName(l.NameA)
	if err != nil {
		t.Fatal(err)
	}
	oif := int32(link.Attrs().Index)
	c, err := Open(a.NsHandle())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const proto = 165
	var want []Route
	for i := range 600 {
		table := uint32(7001)
		if i%2 == 1 {
			table = 4_000_000_001
		}
		r := Route{Family: AFInet, Table: table, Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 32),
			Gw: l.AddrB, Oif: oif, Protocol: proto, Type: TypeUnicast}
		if i%3 == 0 {
			r = Route{Family: AFInet6, Table: table, Dst: netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0xc8, 15: byte(i), 14: byte(i >> 8)}), 128),
				Oif: oif, Protocol: proto, Type: TypeUnicast}
		}
		want = append(want, r)
	}
	ops := make([]Op, len(want))
	for i, r := range want {
		ops[i] = Op{Route: r}
	}
	for i, err := range c.Apply(ops) {
		if err != nil {
			t.Fatalf("add %v: %v", want[i], err)
		}
	}
	dump := func() []string {
		var out []string
		for _, fam := range []uint8{AFInet, AFInet6} {
			got, err := c.DumpRoutes(fam, proto)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range got {
				out = append(out, fmt.Sprintf("%d %v", r.Family, r))
			}
		}
		slices.Sort(out)
		return out
	}
	var exp []string
	for _, r := range want {
		exp = append(exp, fmt.Sprintf("%d %v", r.Family, r))
	}
	slices.Sort(exp)
	if got := dump(); !slices.Equal(got, exp) {
		t.Fatalf("dump after add: %d routes, want %d\nfirst got  %q\nfirst want %q", len(got), len(exp), got[:min(3, len(got))], exp[:3])
	}
	for i := range ops {
		ops[i].Del = true
	}
	for i, err := range c.Apply(ops) {
		if err != nil {
			t.Fatalf("delete %v: %v", want[i], err)
		}
	}
	if got := dump(); len(got) != 0 {
		t.Fatalf("dump after delete: %q", got[:min(3, len(got))])
	}
}
