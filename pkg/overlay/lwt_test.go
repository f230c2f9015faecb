package overlay

// The route-attached alternative to the fast path, kept to measure it
// against the tc program (BenchmarkVMThroughput): an `encap bpf xmit`
// program on each remote route that pushes outer IPv4 + UDP (or GRE) + the
// label with bpf_lwt_push_encap(BPF_LWT_ENCAP_IP) and returns
// BPF_LWT_REROUTE, so the kernel routes the outer packet to the underlay.

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

const (
	bpfLWTEncapIP  = 2   // BPF_LWT_ENCAP_IP (after SEG6 and SEG6_INLINE)
	bpfLWTReroute  = 128 // BPF_LWT_REROUTE
	bpfLWTDrop     = 2   // BPF_DROP
	lwtProgramName = "iof_lwt"
)

// lwtProgram builds the lwt xmit program for the network with routing table
// table. The packet starts at its IPv4 header (already forwarded: TTL one
// less). Stack as in fastPathProgram.
func lwtProgram(routes, stats *ebpf.Map, table uint32) asm.Instructions {
	const (
		key = -16
		hdr = -48
		ip  = hdr
		l4  = hdr + 20
	)
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, skbDataOff, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, skbDataEndOff, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, 20),
		asm.JGT.Reg(asm.R2, asm.R3, "drop"),
		asm.LoadMem(asm.R9, asm.R7, 8, asm.Byte),
		asm.StoreImm(asm.RFP, key, 64, asm.Word),
		asm.StoreImm(asm.RFP, key+4, ne32(table), asm.Word),
		asm.LoadMem(asm.R2, asm.R7, 16, asm.Word),
		asm.StoreMem(asm.RFP, key+8, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, routes.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, key),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.LoadMem(asm.R2, asm.R8, 8, asm.Word),
		asm.Or.Reg(asm.R2, asm.R9),
		asm.HostTo(asm.BE, asm.R2, asm.Word),
		asm.Mov.Reg(asm.R9, asm.R2),
		asm.LoadMem(asm.R2, asm.R8, 16, asm.Word),
		asm.JEq.Imm(asm.R2, fastPathGRE, "gre"),

		// MPLSoUDP.
		asm.StoreMem(asm.RFP, l4+8, asm.R9, asm.Word),
		asm.StoreImm(asm.RFP, ip+9, unix.IPPROTO_UDP, asm.Byte),
		asm.LoadMem(asm.R2, asm.R6, skbLenOff, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.Add.Imm(asm.R2, mplsoudpHeaderLen),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.RFP, ip+2, asm.R2, asm.Half),
		asm.Add.Imm(asm.R3, 8+4),
		asm.HostTo(asm.BE, asm.R3, asm.Half),
		asm.StoreMem(asm.RFP, l4+4, asm.R3, asm.Half),
		asm.StoreImm(asm.RFP, l4+2, ne16(MPLSoUDPPort), asm.Half),
		asm.StoreImm(asm.RFP, l4+6, 0, asm.Half),
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

		// MPLSoGRE.
		asm.StoreMem(asm.RFP, l4+4, asm.R9, asm.Word).WithSymbol("gre"),
		asm.StoreImm(asm.RFP, ip+9, unix.IPPROTO_GRE, asm.Byte),
		asm.LoadMem(asm.R2, asm.R6, skbLenOff, asm.Word),
		asm.Add.Imm(asm.R2, mplsogreHeaderLen),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.RFP, ip+2, asm.R2, asm.Half),
		asm.StoreImm(asm.RFP, l4, 0, asm.Half),
		asm.StoreImm(asm.RFP, l4+2, ne16(unix.ETH_P_MPLS_UC), asm.Half),
		asm.Mov.Imm(asm.R7, mplsogreHeaderLen),

		// Outer IPv4; the kernel fills in the checksum (left 0).
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
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, bpfLWTEncapIP),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, hdr),
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.FnLwtPushEncap.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
	}
	insns = append(insns, fastPathCount(stats, fastPathStatEncapsulated, -56)...)
	insns = append(insns, asm.Mov.Imm(asm.R0, bpfLWTReroute), asm.Return())
	drop := fastPathCount(stats, fastPathStatToKernel, -56)
	drop[0] = drop[0].WithSymbol("drop")
	insns = append(insns, drop...)
	return append(insns, asm.Mov.Imm(asm.R0, bpfLWTDrop), asm.Return())
}

// LWTEncap is the lwt alternative for one network: its program and map.
type LWTEncap struct {
	routes *ebpf.Map
	stats  *ebpf.Map // slot 0: encapsulated; slot 1: dropped
	prog   *ebpf.Program
	table  uint32
}

// NewLWTEncap loads the lwt program for table.
func NewLWTEncap(table uint32) (*LWTEncap, error) {
	f, err := newFastPath()
	if err != nil {
		return nil, err
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: lwtProgramName, Type: ebpf.LWTXmit, License: "Apache-2.0",
		Instructions: lwtProgram(f.routes, f.stats, table)})
	if err != nil {
		f.close()
		return nil, fmt.Errorf("load lwt program: %w", err)
	}
	return &LWTEncap{routes: f.routes, stats: f.stats, prog: p, table: table}, nil
}

// Close releases the program and map (routes using them keep them alive).
func (l *LWTEncap) Close() {
	l.prog.Close()
	l.routes.Close()
	l.stats.Close()
}

// Counts returns the packets the program encapsulated and dropped.
func (l *LWTEncap) Counts() (encapsulated, dropped uint64) {
	f := fastPath{stats: l.stats}
	encapsulated, _ = f.counter(fastPathStatEncapsulated)
	dropped, _ = f.counter(fastPathStatToKernel)
	return encapsulated, dropped
}

// Route points prefix in the network's table at the program: `ip route
// replace PREFIX encap bpf xmit fd N headroom H dev UNDERLAY table T`.
func (l *LWTEncap) Route(h *netlink.Handle, prefix netip.Prefix, remote, local netip.Addr, label uint32, gre bool, underlay int) error {
	k := fastPathKey{table: l.table, prefix: prefix}
	v := fastPathValue{remote: remote, local: local, label: label, ifindex: underlay, gre: gre}
	if err := l.routes.Put(k.bytes(), v.bytes()); err != nil {
		return err
	}
	e := &netlink.BpfEncap{}
	if err := e.SetProg(nl.LWT_BPF_XMIT, l.prog.FD(), lwtProgramName); err != nil {
		return err
	}
	hl := mplsoudpHeaderLen
	if gre {
		hl = mplsogreHeaderLen
	}
	if err := e.SetXmitHeadroom(hl); err != nil {
		return err
	}
	_, dst, _ := net.ParseCIDR(prefix.String())
	return h.RouteReplace(&netlink.Route{Dst: dst, Table: int(l.table), LinkIndex: underlay, Encap: e})
}
