package overlay

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/iotfabric/iotfabric/internal/testenv"
)

// TestFastPathProgram runs the fast path program on packets with
// BPF_PROG_TEST_RUN: a routed destination comes out with outer IPv4, UDP 6635
// (or GRE) and the label (bottom of stack, inner TTL less one), its inner IPv4
// TTL one less with the header checksum updated, and is redirected; a packet
// about to expire and other traffic pass untouched to the kernel path, and
// the counters say so.
func TestFastPathProgram(t *testing.T) {
	testenv.RequireRoot(t, "loads BPF programs")
	if err := detectFastPath(); err != nil {
		t.Fatalf("kernel lacks the fast path's helpers: %v", err)
	}
	f, err := newFastPath()
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	local, remote := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	k := fastPathKey{table: 7001, prefix: netip.MustParsePrefix("10.1.0.0/24")}
	if err := f.routes.Put(k.bytes(), fastPathValue{remote: remote, local: local, label: 1002, ifindex: 5, mtu: 1500}.bytes()); err != nil {
		t.Fatal(err)
	}
	kg := fastPathKey{table: 7001, prefix: netip.MustParsePrefix("10.2.0.0/16")}
	if err := f.routes.Put(kg.bytes(), fastPathValue{remote: remote, local: local, label: 2002, ifindex: 5, mtu: 1500, gre: true}.bytes()); err != nil {
		t.Fatal(err)
	}
	prog, err := f.program(7001)
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.program(7002)
	if err != nil {
		t.Fatal(err)
	}

	payload := []byte("fast path payload")
	var packetLen func(dst string, ttl uint8, ipLen int) []byte
	packet := func(dst string) []byte { return packetLen(dst, 64, 0) }
	packetTTL := func(dst string, ttl uint8) []byte { return packetLen(dst, ttl, 0) }
	packetLen = func(dst string, ttl uint8, ipLen int) []byte {
		payload := payload
		if ipLen > 0 {
			payload = make([]byte, ipLen-20-8)
		}
		buf := gopacket.NewSerializeBuffer()
		eth := &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: ttl, Protocol: layers.IPProtocolUDP, SrcIP: []byte{10, 1, 0, 1}, DstIP: netip.MustParseAddr(dst).AsSlice()}
		udp := &layers.UDP{SrcPort: 4000, DstPort: 5000}
		_ = udp.SetNetworkLayerForChecksum(ip)
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload(payload)); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	run := func(p *ebpf.Program, in []byte) (uint32, []byte) {
		t.Helper()
		out := make([]byte, len(in)+64)
		rc, err := p.Run(&ebpf.RunOptions{Data: in, DataOut: out})
		if err != nil {
			t.Fatal(err)
		}
		return rc, out
	}

	in := packet("10.1.0.2")
	rc, out := run(prog, in)
	if rc != 7 { // TC_ACT_REDIRECT
		t.Fatalf("routed destination: return %d, want 7 (redirect)", rc)
	}
	out = out[:len(in)+mplsoudpHeaderLen]
	pk := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	oip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	oudp, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if oip == nil || oudp == nil {
		t.Fatalf("no outer IPv4/UDP in %x", out)
	}
	if !oip.SrcIP.Equal(local.AsSlice()) || !oip.DstIP.Equal(remote.AsSlice()) || oip.TTL != 64 || oip.Flags != layers.IPv4DontFragment ||
		int(oip.Length) != len(out)-14 {
		t.Errorf("outer IPv4 %+v", oip)
	}
	if want := ipv4Checksum(out[14:34]); want != 0 {
		t.Errorf("outer IPv4 checksum does not verify (%#x)", want)
	}
	if oudp.DstPort != MPLSoUDPPort || oudp.SrcPort < 32768 || oudp.SrcPort > 60999 || int(oudp.Length) != len(out)-34 || oudp.Checksum != 0 {
		t.Errorf("outer UDP %+v", oudp)
	}
	entry := binary.BigEndian.Uint32(out[42:46])
	if label, bos, ttl := entry>>12, entry>>8&1, entry&0xff; label != 1002 || bos != 1 || ttl != 63 {
		t.Errorf("label entry %#x: label %d bos %d ttl %d, want 1002 1 63", entry, label, bos, ttl)
	}
	checkInner(t, "MPLSoUDP", out[46:], in[14:])

	// MPLSoGRE: outer IPv4 protocol 47, GRE without options carrying 0x8847.
	in = packet("10.2.3.4")
	rc, out = run(prog, in)
	if rc != 7 {
		t.Fatalf("MPLSoGRE destination: return %d, want 7 (redirect)", rc)
	}
	out = out[:len(in)+mplsogreHeaderLen]
	if out[14+9] != 47 || ipv4Checksum(out[14:34]) != 0 || int(binary.BigEndian.Uint16(out[16:])) != len(out)-14 ||
		string(out[26:34]) != string(append(local.AsSlice(), remote.AsSlice()...)) {
		t.Errorf("MPLSoGRE outer IPv4 %x", out[14:34])
	}
	if g := binary.BigEndian.Uint32(out[34:38]); g != 0x8847 {
		t.Errorf("GRE header %#x, want 0x00008847", g)
	}
	if entry := binary.BigEndian.Uint32(out[38:42]); entry != 2002<<12|1<<8|63 {
		t.Errorf("MPLSoGRE label entry %#x", entry)
	}
	checkInner(t, "MPLSoGRE", out[42:], in[14:])

	for _, c := range []struct {
		name string
		p    *ebpf.Program
		dst  string
		ttl  uint8
	}{{"unrouted destination", prog, "10.9.0.2", 64}, {"other network", other, "10.1.0.2", 64},
		{"TTL 1 (the kernel path answers time exceeded)", prog, "10.1.0.2", 1},
		{"TTL 0", prog, "10.2.3.4", 0}} {
		in := packetTTL(c.dst, c.ttl)
		rc, out := run(c.p, in)
		if rc != 0 || string(out[:len(in)]) != string(in) {
			t.Errorf("%s: return %d, packet %x; want 0 (pass) and the packet unchanged", c.name, rc, out[:len(in)])
		}
	}
	// MTU: the underlay's is 1500; what fits once encapsulated goes,
	// what does not goes to the kernel path (fragmentation needed).
	for _, c := range []struct {
		dst   string
		ipLen int
		rc    uint32
	}{{"10.1.0.2", 1500 - mplsoudpHeaderLen, 7}, {"10.1.0.2", 1500 - mplsoudpHeaderLen + 1, 0},
		{"10.2.3.4", 1500 - mplsogreHeaderLen, 7}, {"10.2.3.4", 1500 - mplsogreHeaderLen + 1, 0}} {
		in := packetLen(c.dst, 64, c.ipLen)
		if rc, _ := run(prog, in); rc != c.rc {
			t.Errorf("%d-byte packet to %s: return %d, want %d", c.ipLen, c.dst, rc, c.rc)
		}
	}
	for slot, want := range map[uint32]uint64{fastPathStatEncapsulated: 4, fastPathStatToKernel: 4} {
		if n, err := f.counter(slot); err != nil || n != want {
			t.Errorf("counter %d: %d (%v), want %d", slot, n, err, want)
		}
	}
}

// checkInner compares the inner packet sent with the one received: the same
// but for the TTL one less and the header checksum, which must verify.
func checkInner(t *testing.T, what string, got, in []byte) {
	t.Helper()
	want := append([]byte(nil), in...)
	want[8]--
	if len(got) != len(want) || string(got[:10]) != string(want[:10]) || string(got[12:]) != string(want[12:]) {
		t.Errorf("%s inner packet:\n got %x\nwant %x (TTL one less)", what, got, want)
	}
	if len(got) >= 20 && ipv4Checksum(got[:20]) != 0 {
		t.Errorf("%s inner IPv4 checksum does not verify: %x", what, got[:20])
	}
}

func ipv4Checksum(h []byte) uint16 {
	var s uint32
	for i := 0; i < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
