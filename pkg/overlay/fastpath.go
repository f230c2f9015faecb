package overlay

// This file holds the BPF fast path for MPLSoUDP and MPLSoGRE: a tc program on each
// endpoint's host-side interface (ingress, i.e. the pod's egress) that pushes
// the outer IPv4, UDP (port 6635) or GRE, and MPLS headers in one step with
// bpf_skb_adjust_room's encapsulation flags, so the kernel keeps the packet's
// segmentation offload, and redirects it to the underlay device. The kernel
// path (route through a nexthop into the ipip/FOU or GRE tunnel) stays programmed
// underneath: packets the program does not handle take it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// FastPathMode chooses how MPLSoUDP is encapsulated.
type FastPathMode string

// Fast path modes.
const (
	FastPathOff  FastPathMode = "off"  // kernel path only (ipip mode mplsip + fou)
	FastPathAuto FastPathMode = "auto" // BPF fast path when the kernel allows it, kernel path otherwise
	FastPathOn   FastPathMode = "on"   // BPF fast path; fail at start when the kernel does not allow it
)

// FastPathFilterName names the tc filters the fast path attaches; Cleanup
// removes filters with this name.
const FastPathFilterName = IfPrefix + "mpls"

const (
	fastPathMaxRoutes  = 1 << 16
	fastPathKeySize    = 12 // prefix length (host order), table (big endian), IPv4 address
	fastPathValueSize  = 24 // remote, local (big endian), label entry without TTL (host order), underlay ifindex, encapsulation, underlay MTU
	fastPathFilterPrio = 1

	mplsoudpHeaderLen = 20 + 8 + 4 // outer IPv4 + UDP + one label
	mplsogreHeaderLen = 20 + 4 + 4 // outer IPv4 + GRE + one label

	// Encapsulations in the map's values.
	fastPathUDP = 0
	fastPathGRE = 1

	// Constants of the BPF ABI (linux/bpf.h, linux/pkt_cls.h).
	bpfAdjRoomMAC        = 1
	bpfFAdjRoomEncapIPv4 = 1 << 1
	bpfFAdjRoomEncapGRE  = 1 << 3
	bpfFAdjRoomEncapUDP  = 1 << 4
	tcActOK              = 0
	tcActShot            = 2
	skbLenOff            = 0   // struct __sk_buff.len
	skbProtocolOff       = 16  // struct __sk_buff.protocol
	skbDataOff           = 76  // struct __sk_buff.data
	skbDataEndOff        = 80  // struct __sk_buff.data_end
	skbGSOSizeOff        = 176 // struct __sk_buff.gso_size (Linux 5.7)
)

// adjRoomEncapL2 is BPF_F_ADJ_ROOM_ENCAP_L2(n): n bytes of inner "L2" (here the label).
func adjRoomEncapL2(n uint64) uint64 { return (n & 0xff) << 56 }

// ne16/ne32 return the value whose native-endian bytes are v in network order,
// for immediates the program stores or compares as raw packet bytes.
func ne16(v uint16) int64 {
	return int64(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v)))
}
func ne32(v uint32) int64 {
	return int64(binary.NativeEndian.Uint32(binary.BigEndian.AppendUint32(nil, v)))
}

// detectFastPath tells whether the kernel and our privileges allow the fast
// path: loading a tc program, bpf_skb_adjust_room (its encapsulation flags
// date from Linux 5.2) and bpf_redirect_neigh (5.10).
func detectFastPath() error {
	for _, fn := range []asm.BuiltinFunc{asm.FnSkbAdjustRoom, asm.FnRedirectNeigh} {
		if err := features.HaveProgramHelper(ebpf.SchedCLS, fn); err != nil {
			return fmt.Errorf("tc program helper %v: %w", fn, err)
		}
	}
	return nil
}

// Slots of the fast path's per-CPU packet counters (map iof_mpls_stats).
const (
	fastPathStatEncapsulated = 0 // encapsulated and sent to the underlay
	fastPathStatToKernel     = 1 // to a fast-path route, handed to the kernel path
	fastPathStats            = 2
)

// fastPathCount adds one to the counter slot of stats; the stack word at
// fp+key is scratch. R0-R5 are clobbered.
func fastPathCount(stats *ebpf.Map, slot int32, key int16) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, key, int64(slot), asm.Word),
		asm.LoadMapPtr(asm.R1, stats.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, fmt.Sprintf("counted%d", slot)),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol(fmt.Sprintf("counted%d", slot)),
	}
}

// fastPathProgram builds the tc program for the network with routing table
// table. Stack: the LPM key at fp-16 (12 bytes), the headers at fp-48 (32 for
// MPLSoUDP, 28 for MPLSoGRE), the inner packet's TTL and protocol bytes as
// received at fp-52 and as sent at fp-50, a counter key at fp-56.
func fastPathProgram(routes, stats *ebpf.Map, table uint32) asm.Instructions {
	const (
		key      = -16
		hdr      = -48
		ip       = hdr
		l4       = hdr + 20 // UDP or GRE
		ttlOld   = -52
		ttlNew   = -50
		statsKey = -56
	)
	udpFlags := int64(bpfFAdjRoomEncapIPv4 | bpfFAdjRoomEncapUDP | adjRoomEncapL2(4))
	greFlags := int64(bpfFAdjRoomEncapIPv4 | bpfFAdjRoomEncapGRE | adjRoomEncapL2(4))
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// IPv4 only, with its header in the linear data.
		asm.LoadMem(asm.R2, asm.R6, skbProtocolOff, asm.Word),
		asm.JNE.Imm(asm.R2, int32(ne16(unix.ETH_P_IP)), "pass"),
		asm.LoadMem(asm.R7, asm.R6, skbDataOff, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, skbDataEndOff, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, 14+20),
		asm.JGT.Reg(asm.R2, asm.R3, "pass"),
		// TTL and protocol, as they are and with the TTL one less (the
		// forwarding the kernel path would do).
		asm.LoadMem(asm.R2, asm.R7, 14+8, asm.Half),
		asm.StoreMem(asm.RFP, ttlOld, asm.R2, asm.Half),
		asm.Add.Imm(asm.R2, -int32(ne16(0x0100))),
		asm.StoreMem(asm.RFP, ttlNew, asm.R2, asm.Half),
		asm.LoadMem(asm.R9, asm.R7, 14+8, asm.Byte),
		// Look the destination up in this network's routes.
		asm.StoreImm(asm.RFP, key, 64, asm.Word),
		asm.StoreImm(asm.RFP, key+4, ne32(table), asm.Word),
		asm.LoadMem(asm.R2, asm.R7, 14+16, asm.Word),
		asm.StoreMem(asm.RFP, key+8, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, routes.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, key),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R8, asm.R0),
		// TTL: the kernel path answers packets about to expire (ICMP time
		// exceeded), as it does without the fast path.
		asm.JLE.Imm(asm.R9, 1, "kernel"),
		asm.Add.Imm(asm.R9, -1),
		// MTU: a packet that would not fit the underlay device once
		// encapsulated, and is not a GSO packet (segmented later to the
		// pod's MSS), goes to the kernel path, which fragments it or answers
		// "fragmentation needed" as it does without the fast path.
		asm.LoadMem(asm.R2, asm.R6, skbGSOSizeOff, asm.Word),
		asm.JNE.Imm(asm.R2, 0, "mtuok"),
		asm.LoadMem(asm.R2, asm.R6, skbLenOff, asm.Word),
		asm.Add.Imm(asm.R2, mplsoudpHeaderLen-14),
		asm.LoadMem(asm.R3, asm.R8, 16, asm.Word),
		asm.JNE.Imm(asm.R3, fastPathGRE, "mtu"),
		asm.Add.Imm(asm.R2, mplsogreHeaderLen-mplsoudpHeaderLen),
		asm.LoadMem(asm.R3, asm.R8, 20, asm.Word).WithSymbol("mtu"),
		asm.JGT.Reg(asm.R2, asm.R3, "kernel"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("mtuok"),
		// Label entry (label, bottom of stack, the inner TTL less one) in R9.
		asm.LoadMem(asm.R2, asm.R8, 8, asm.Word),
		asm.Or.Reg(asm.R2, asm.R9),
		asm.HostTo(asm.BE, asm.R2, asm.Word),
		asm.Mov.Reg(asm.R9, asm.R2),
		asm.LoadMem(asm.R2, asm.R8, 16, asm.Word),
		asm.JEq.Imm(asm.R2, fastPathGRE, "gre"),

		// MPLSoUDP: room for IPv4 + UDP + label after the Ethernet header; the
		// flags keep GSO.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, mplsoudpHeaderLen),
		asm.Mov.Imm(asm.R3, bpfAdjRoomMAC),
		asm.LoadImm(asm.R4, udpFlags, asm.DWord),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "kernel"),
		asm.StoreMem(asm.RFP, l4+8, asm.R9, asm.Word),
		asm.StoreImm(asm.RFP, ip+9, unix.IPPROTO_UDP, asm.Byte),
		asm.LoadMem(asm.R2, asm.R6, skbLenOff, asm.Word),
		asm.Add.Imm(asm.R2, -14),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.RFP, ip+2, asm.R2, asm.Half),
		// UDP: length, destination 6635, checksum 0 (valid over IPv4).
		asm.Add.Imm(asm.R3, -20),
		asm.HostTo(asm.BE, asm.R3, asm.Half),
		asm.StoreMem(asm.RFP, l4+4, asm.R3, asm.Half),
		asm.StoreImm(asm.RFP, l4+2, ne16(MPLSoUDPPort), asm.Half),
		asm.StoreImm(asm.RFP, l4+6, 0, asm.Half),
		// Source port from the flow hash, as the kernel's udp_flow_src_port
		// does with the default local port range 32768-60999.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetHashRecalc.Call(),
		asm.Mov.Reg32(asm.R1, asm.R0),
		asm.LSh.Imm32(asm.R1, 16),
		asm.Xor.Reg32(asm.R0, asm.R1),
		asm.Mul.Imm(asm.R0, 60999-32768),
		asm.RSh.Imm(asm.R0, 32),
		asm.Add.Imm(asm.R0, 32768),
		asm.HostTo(asm.BE, asm.R0, asm.Half),
		asm.StoreMem(asm.RFP, l4, asm.R0, asm.Half),
		asm.Mov.Imm(asm.R7, mplsoudpHeaderLen),
		asm.Ja.Label("ipv4"),

		// MPLSoGRE: room for IPv4 + GRE + label.
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("gre"),
		asm.Mov.Imm(asm.R2, mplsogreHeaderLen),
		asm.Mov.Imm(asm.R3, bpfAdjRoomMAC),
		asm.LoadImm(asm.R4, greFlags, asm.DWord),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "kernel"),
		asm.StoreMem(asm.RFP, l4+4, asm.R9, asm.Word),
		asm.StoreImm(asm.RFP, ip+9, unix.IPPROTO_GRE, asm.Byte),
		asm.LoadMem(asm.R2, asm.R6, skbLenOff, asm.Word),
		asm.Add.Imm(asm.R2, -14),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.RFP, ip+2, asm.R2, asm.Half),
		// GRE: no checksum, key or sequence number; protocol MPLS unicast.
		asm.StoreImm(asm.RFP, l4, 0, asm.Half),
		asm.StoreImm(asm.RFP, l4+2, ne16(unix.ETH_P_MPLS_UC), asm.Half),
		asm.Mov.Imm(asm.R7, mplsogreHeaderLen),

		// Outer IPv4: 0x45, tos 0, id 0, DF, TTL 64, addresses, checksum.
		asm.StoreImm(asm.RFP, ip, 0x45, asm.Byte).WithSymbol("ipv4"),
		asm.StoreImm(asm.RFP, ip+1, 0, asm.Byte),
		asm.StoreImm(asm.RFP, ip+4, 0, asm.Half),
		asm.StoreImm(asm.RFP, ip+6, ne16(0x4000), asm.Half),
		asm.StoreImm(asm.RFP, ip+8, 64, asm.Byte),
		asm.StoreImm(asm.RFP, ip+10, 0, asm.Half),
		asm.LoadMem(asm.R2, asm.R8, 4, asm.Word),
		asm.StoreMem(asm.RFP, ip+12, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R8, 0, asm.Word),
		asm.StoreMem(asm.RFP, ip+16, asm.R2, asm.Word),
		asm.Mov.Imm(asm.R1, 0),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, ip),
		asm.Mov.Imm(asm.R4, 20),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnCsumDiff.Call(),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.RSh.Imm(asm.R1, 16),
		asm.And.Imm(asm.R0, 0xffff),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.RSh.Imm(asm.R1, 16),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Xor.Imm(asm.R0, 0xffff),
		asm.StoreMem(asm.RFP, ip+10, asm.R0, asm.Half),
		// Write the headers.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 14),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, hdr),
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		// The inner IPv4 TTL one less, its header checksum updated.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, 14+8),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, ttlNew),
		asm.Mov.Imm(asm.R4, 1),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, 14+10),
		asm.LoadMem(asm.R3, asm.RFP, ttlOld, asm.Half),
		asm.LoadMem(asm.R4, asm.RFP, ttlNew, asm.Half),
		asm.Mov.Imm(asm.R5, 2),
		asm.FnL3CsumReplace.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
	}
	insns = append(insns, fastPathCount(stats, fastPathStatEncapsulated, statsKey)...)
	insns = append(insns,
		// Send to the underlay device. Returning the packet to the stack
		// instead would drop it as a martian (local source).
		asm.LoadMem(asm.R1, asm.R8, 12, asm.Word),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRedirectNeigh.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
	)
	// Handed to the kernel path unchanged: counted, then passed.
	kernel := fastPathCount(stats, fastPathStatToKernel, statsKey)
	kernel[0] = kernel[0].WithSymbol("kernel")
	insns = append(insns, kernel...)
	return append(insns,
		asm.Mov.Imm(asm.R0, tcActOK).WithSymbol("pass"),
		asm.Return(),
	)
}

// fastPath is the fast path's kernel objects and the manager's record of them.
type fastPath struct {
	routes   *ebpf.Map
	stats    *ebpf.Map                // per-CPU packet counters, fastPathStat*
	progs    map[uint32]*ebpf.Program // by network table
	attached map[string]attachment    // by endpoint interface
}

type attachment struct {
	ifindex int
	table   uint32
}

type fastPathKey struct {
	table  uint32
	prefix netip.Prefix
}

func (k fastPathKey) bytes() []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(32+k.prefix.Bits()))
	b = binary.BigEndian.AppendUint32(b, k.table)
	a := k.prefix.Addr().As4()
	return append(b, a[:]...)
}

type fastPathValue struct {
	remote, local netip.Addr
	label         uint32
	ifindex       int
	gre           bool // MPLSoGRE instead of MPLSoUDP
	mtu           int  // the underlay device's
}

func (v fastPathValue) bytes() []byte {
	r, l := v.remote.As4(), v.local.As4()
	b := append(r[:], l[:]...)
	b = binary.NativeEndian.AppendUint32(b, v.label<<12|1<<8)
	b = binary.NativeEndian.AppendUint32(b, uint32(v.ifindex))
	e := uint32(fastPathUDP)
	if v.gre {
		e = fastPathGRE
	}
	b = binary.NativeEndian.AppendUint32(b, e)
	return binary.NativeEndian.AppendUint32(b, uint32(v.mtu))
}

func newFastPath() (*fastPath, error) {
	routes, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "iof_mpls", Type: ebpf.LPMTrie, KeySize: fastPathKeySize, ValueSize: fastPathValueSize,
		MaxEntries: fastPathMaxRoutes, Flags: unix.BPF_F_NO_PREALLOC,
	})
	if err != nil {
		return nil, fmt.Errorf("overlay: fast path map: %w", err)
	}
	stats, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "iof_mpls_stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: fastPathStats,
	})
	if err != nil {
		routes.Close()
		return nil, fmt.Errorf("overlay: fast path counters: %w", err)
	}
	return &fastPath{routes: routes, stats: stats, progs: map[uint32]*ebpf.Program{}, attached: map[string]attachment{}}, nil
}

func (f *fastPath) close() {
	for _, p := range f.progs {
		p.Close()
	}
	f.routes.Close()
	f.stats.Close()
}

// counter sums a counter slot over the CPUs.
func (f *fastPath) counter(slot uint32) (uint64, error) {
	var per []uint64
	if err := f.stats.Lookup(slot, &per); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

func (f *fastPath) program(table uint32) (*ebpf.Program, error) {
	if p, ok := f.progs[table]; ok {
		return p, nil
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "iof_mpls", Type: ebpf.SchedCLS, License: "Apache-2.0",
		Instructions: fastPathProgram(f.routes, f.stats, table),
	})
	if err != nil {
		return nil, fmt.Errorf("overlay: load fast path program: %w", err)
	}
	f.progs[table] = p
	return p, nil
}

// UsesFastPath tells whether MPLSoUDP routes are encapsulated by the BPF fast path.
func (m *Manager) UsesFastPath() bool { return m.fp != nil }

// pathCounts is how many endpoints and MPLS routes each path serves.
type pathCounts struct {
	endpointsFast, endpointsKernel int
	routesFast, routesKernel       int
}

// FastPathStats tells which path MPLSoUDP and MPLSoGRE traffic takes, as of
// the last Set, and what the BPF fast path did since the manager started.
type FastPathStats struct {
	// Enabled: the BPF fast path is loaded (Config.FastPath and the kernel allow it).
	Enabled bool
	// EndpointsFast counts endpoints whose packets the fast path program sees
	// (endpoints of networks with fast-path routes); EndpointsKernel the
	// other endpoints.
	EndpointsFast, EndpointsKernel int
	// RoutesFast counts MPLSoUDP/MPLSoGRE routes the fast path encapsulates;
	// RoutesKernel those only the kernel path carries (IPv6 prefixes, or
	// every route without the fast path).
	RoutesFast, RoutesKernel int
	// Encapsulated counts packets the fast path sent to the underlay;
	// ToKernel packets to fast-path routes it handed to the kernel path
	// unchanged (TTL about to expire, headers it could not push).
	Encapsulated, ToKernel uint64
}

// FastPathStats returns the paths' counts and the fast path's packet
// counters. It does not wait for a Set in progress.
func (m *Manager) FastPathStats() FastPathStats {
	m.statMu.Lock()
	defer m.statMu.Unlock()
	st := FastPathStats{Enabled: m.stats != nil,
		EndpointsFast: m.paths.endpointsFast, EndpointsKernel: m.paths.endpointsKernel,
		RoutesFast: m.paths.routesFast, RoutesKernel: m.paths.routesKernel}
	if m.stats != nil {
		f := fastPath{stats: m.stats}
		st.Encapsulated, _ = f.counter(fastPathStatEncapsulated)
		st.ToKernel, _ = f.counter(fastPathStatToKernel)
	}
	return st
}

// countPathsLocked records how many endpoints and MPLS routes of s each path
// serves; fast holds the tables whose routes the fast path encapsulates.
func (m *Manager) countPathsLocked(s *State, fast map[uint32]bool) {
	prio := s.EncapPriority
	if len(prio) == 0 {
		prio = DefaultEncapPriority
	}
	var c pathCounts
	for _, n := range s.Networks {
		for range n.Endpoints {
			if fast[n.Table] {
				c.endpointsFast++
			} else {
				c.endpointsKernel++
			}
		}
		for _, r := range n.Routes {
			e, ok := chooseEncap(prio, r.Encaps, m.feat)
			if !ok || (e != encap.MPLSoUDP && e != encap.MPLSoGRE) {
				continue
			}
			if fast[n.Table] && r.Prefix.Addr().Is4() {
				c.routesFast++
			} else {
				c.routesKernel++
			}
		}
	}
	m.statMu.Lock()
	m.paths = c
	m.statMu.Unlock()
}

// ensureFastPathLocked makes the fast path's map hold the MPLSoUDP routes of s
// and attaches the network's program to every endpoint of a network that has
// any; endpoints of networks without such routes lose their filter.
func (m *Manager) ensureFastPathLocked(s *State, byName map[string]netlink.Link, fail func(error)) {
	f := m.fp
	if f == nil {
		m.countPathsLocked(s, nil)
		// A fast path left by an earlier agent (or one started with the fast
		// path) is removed, so its stale map no longer steers traffic.
		for _, n := range s.Networks {
			for _, ep := range n.Endpoints {
				if l, ok := byName[ep.Interface]; ok {
					m.sweepFastPathLocked(l, fail)
				}
			}
		}
		return
	}
	prio := s.EncapPriority
	if len(prio) == 0 {
		prio = DefaultEncapPriority
	}
	want := map[string][]byte{}
	underlays := map[netip.Addr]underlayRoute{}
	tables := map[uint32]bool{}
	for _, n := range s.Networks {
		for _, r := range n.Routes {
			e, ok := chooseEncap(prio, r.Encaps, m.feat)
			if !ok || !fastPathRoute(e, r.Prefix) {
				continue
			}
			k, v, err := m.fastPathEntryLocked(underlays, s.Underlay, n.Table, r, e)
			if err != nil {
				fail(err)
				continue
			}
			want[string(k)] = v
			tables[n.Table] = true
		}
	}
	var stale [][]byte
	var k, v []byte
	it := f.routes.Iterate()
	for it.Next(&k, &v) {
		if w, ok := want[string(k)]; !ok {
			stale = append(stale, append([]byte(nil), k...))
		} else if string(w) == string(v) {
			delete(want, string(k))
		}
	}
	if err := it.Err(); err != nil {
		fail(fmt.Errorf("overlay: fast path: read map: %w", err))
	}
	for k, v := range want {
		if err := f.routes.Put([]byte(k), v); err != nil {
			fail(fmt.Errorf("overlay: fast path: map update: %w", err))
		}
	}
	for _, k := range stale {
		if err := f.routes.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			fail(fmt.Errorf("overlay: fast path: map delete: %w", err))
		}
	}

	m.countPathsLocked(s, tables)
	wantAttach := map[string]uint32{}
	for _, n := range s.Networks {
		if !tables[n.Table] {
			continue
		}
		for _, ep := range n.Endpoints {
			wantAttach[ep.Interface] = n.Table
		}
	}
	for _, n := range s.Networks {
		for _, ep := range n.Endpoints {
			_, want := wantAttach[ep.Interface]
			_, have := f.attached[ep.Interface]
			if l, ok := byName[ep.Interface]; ok && !want && !have {
				m.sweepFastPathLocked(l, fail)
			}
		}
	}
	for name, table := range wantAttach {
		l, ok := byName[name]
		if !ok {
			continue
		}
		a := attachment{ifindex: l.Attrs().Index, table: table}
		if f.attached[name] == a {
			continue
		}
		if err := m.attachFastPathLocked(l, table); err != nil {
			fail(err)
			continue
		}
		f.attached[name] = a
	}
	for name, a := range f.attached {
		if _, ok := wantAttach[name]; ok {
			continue
		}
		if l, ok := byName[name]; ok && l.Attrs().Index == a.ifindex {
			if err := m.detachFastPathLocked(l); err != nil {
				fail(err)
				continue
			}
		}
		delete(f.attached, name)
	}
	used := map[uint32]bool{}
	for _, a := range f.attached {
		used[a.table] = true
	}
	for t, p := range f.progs {
		if !used[t] {
			p.Close()
			delete(f.progs, t)
		}
	}
}

// fastPathRoute tells whether a route to prefix through encapsulation e is
// one the fast path encapsulates (when it is in use): MPLSoUDP and MPLSoGRE
// to IPv4 prefixes.
func fastPathRoute(e encap.Encap, prefix netip.Prefix) bool {
	return (e == encap.MPLSoUDP || e == encap.MPLSoGRE) && prefix.Addr().Is4()
}

// fastPathEntryLocked returns the map entry of remote route r of the network
// with routing table table, through e (a fastPathRoute), local being the
// gateway's underlay address. underlays caches the underlay lookups per
// remote gateway for one Set or UpdateRoutes.
func (m *Manager) fastPathEntryLocked(underlays map[netip.Addr]underlayRoute, local netip.Addr, table uint32,
	r RemoteRoute, e encap.Encap) (key, value []byte, err error) {
	u, ok := underlays[r.RemoteUnderlay]
	if !ok {
		if u, err = m.underlayRouteLocked(r.RemoteUnderlay); err != nil {
			return nil, nil, err
		}
		underlays[r.RemoteUnderlay] = u
	}
	k := fastPathKey{table: table, prefix: r.Prefix.Masked()}
	return k.bytes(), fastPathValue{remote: r.RemoteUnderlay, local: local, label: r.Label,
		ifindex: u.ifindex, mtu: u.mtu, gre: e == encap.MPLSoGRE}.bytes(), nil
}

// underlayRoute is the device toward a remote gateway and the MTU of the way.
type underlayRoute struct{ ifindex, mtu int }

// underlayRouteLocked looks up the underlay device toward remote and the MTU:
// the route's when it has one, else the device's.
func (m *Manager) underlayRouteLocked(remote netip.Addr) (underlayRoute, error) {
	rs, err := m.h.RouteGet(net.IP(remote.AsSlice()))
	if err != nil || len(rs) == 0 {
		return underlayRoute{}, fmt.Errorf("overlay: fast path: underlay route to %s: %w", remote, err)
	}
	u := underlayRoute{ifindex: rs[0].LinkIndex, mtu: rs[0].MTU}
	if u.mtu == 0 {
		l, err := m.h.LinkByIndex(u.ifindex)
		if err != nil {
			return underlayRoute{}, fmt.Errorf("overlay: fast path: underlay device toward %s: %w", remote, err)
		}
		u.mtu = l.Attrs().MTU
	}
	return u, nil
}

func fastPathFilter(ifindex int) netlink.FilterAttrs {
	return netlink.FilterAttrs{LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1,
		Priority: fastPathFilterPrio, Protocol: unix.ETH_P_ALL}
}

func (m *Manager) attachFastPathLocked(l netlink.Link, table uint32) error {
	p, err := m.fp.program(table)
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0),
		Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := m.h.QdiscReplace(q); err != nil {
		return fmt.Errorf("overlay: fast path: clsact on %s: %w", l.Attrs().Name, err)
	}
	flt := &netlink.BpfFilter{FilterAttrs: fastPathFilter(idx), Fd: p.FD(), Name: FastPathFilterName, DirectAction: true}
	if err := m.h.FilterReplace(flt); err != nil {
		return fmt.Errorf("overlay: fast path: attach to %s: %w", l.Attrs().Name, err)
	}
	m.log.Debug("fast path attached", logkey.Interface, l.Attrs().Name)
	return nil
}

// detachFastPathLocked removes the fast path's filters from l's ingress and the
// clsact qdisc when nothing else is attached to it.
func (m *Manager) detachFastPathLocked(l netlink.Link) error {
	var errs []error
	left := 0
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := m.h.FilterList(l, parent)
		if err != nil {
			if isGone(err) {
				return nil
			}
			return fmt.Errorf("overlay: fast path: list filters on %s: %w", l.Attrs().Name, err)
		}
		for _, flt := range fs {
			b, ok := flt.(*netlink.BpfFilter)
			if !ok || !strings.HasPrefix(b.Name, FastPathFilterName) {
				left++
				continue
			}
			if err := m.h.FilterDel(flt); err != nil && !isGone(err) {
				errs = append(errs, fmt.Errorf("overlay: fast path: detach from %s: %w", l.Attrs().Name, err))
			}
		}
	}
	if left == 0 && len(errs) == 0 {
		q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0),
			Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
		if err := m.h.QdiscDel(q); err != nil && !isGone(err) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("overlay: fast path: remove clsact from %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// startFastPath applies Config.FastPath at start: probe the kernel, then
// create the map, or log why the kernel path is used.
func (m *Manager) startFastPath() error {
	if m.cfg.FastPath == FastPathOff {
		m.log.Info("MPLSoUDP encapsulation", logkey.Path, "kernel")
		return nil
	}
	err := detectFastPath()
	if err == nil {
		m.fp, err = newFastPath()
	}
	if err == nil {
		// The program itself must load (through the JIT or, where the JIT
		// refuses it, e.g. on some 32-bit ARM kernels, the interpreter);
		// a kernel that takes neither keeps the kernel path.
		var p *ebpf.Program
		if p, err = m.fp.program(0); err == nil {
			p.Close()
			delete(m.fp.progs, 0)
		} else {
			m.fp.close()
			m.fp = nil
		}
	}
	if err != nil {
		if m.cfg.FastPath == FastPathOn {
			return fmt.Errorf("overlay: BPF fast path requested but unavailable: %w", err)
		}
		m.log.Warn("BPF fast path unavailable, MPLSoUDP takes the kernel path", logkey.Err, err)
		return nil
	}
	if m.stats, err = m.fp.stats.Clone(); err != nil {
		m.fp.close()
		m.fp = nil
		return fmt.Errorf("overlay: fast path counters: %w", err)
	}
	m.log.Info("MPLSoUDP encapsulation", logkey.Path, "bpf")
	return nil
}

// sweepFastPathLocked removes fast path filters from l that the manager has no
// record of.
func (m *Manager) sweepFastPathLocked(l netlink.Link, fail func(error)) {
	fs, err := m.h.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return // no clsact qdisc
	}
	for _, flt := range fs {
		if b, ok := flt.(*netlink.BpfFilter); ok && strings.HasPrefix(b.Name, FastPathFilterName) {
			if err := m.detachFastPathLocked(l); err != nil {
				fail(err)
			}
			return
		}
	}
}

// cleanupFastPathLocked removes the fast path's filters from every link.
func (m *Manager) cleanupFastPathLocked(links []netlink.Link) []error {
	var errs []error
	for _, l := range links {
		m.sweepFastPathLocked(l, func(err error) { errs = append(errs, err) })
	}
	if m.fp != nil {
		m.fp.attached = map[string]attachment{}
	}
	return errs
}
