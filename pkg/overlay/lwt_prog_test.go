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

// TestLWTProgram runs the lwt alternative with BPF_PROG_TEST_RUN: a routed
// destination gets outer IPv4, UDP 6635 and the label pushed and is handed
// back for a route lookup (BPF_LWT_REROUTE); another is dropped.
func TestLWTProgram(t *testing.T) {
	testenv.RequireRoot(t, "loads BPF programs")
	l, err := NewLWTEncap(7001)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	local, remote := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	k := fastPathKey{table: 7001, prefix: netip.MustParsePrefix("10.1.0.0/24")}
	if err := l.routes.Put(k.bytes(), fastPathValue{remote: remote, local: local, label: 1002, ifindex: 5}.bytes()); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolUDP, SrcIP: []byte{10, 1, 0, 1}, DstIP: []byte{10, 1, 0, 2}}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 5000}
	_ = udp.SetNetworkLayerForChecksum(ip)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload("lwt")); err != nil {
		t.Fatal(err)
	}
	in := buf.Bytes()
	out := make([]byte, len(in)+64)
	rc, err := l.prog.Run(&ebpf.RunOptions{Data: in, DataOut: out})
	if err != nil {
		t.Fatal(err)
	}
	if rc != bpfLWTReroute {
		t.Fatalf("return %d, want %d (reroute)", rc, bpfLWTReroute)
	}
	// The output starts with a zeroed Ethernet header.
	o := out[14 : len(in)+mplsoudpHeaderLen]
	if o[9] != 17 || ipv4Checksum(o[:20]) != 0 || int(binary.BigEndian.Uint16(o[2:])) != len(o) ||
		binary.BigEndian.Uint16(o[22:]) != MPLSoUDPPort || int(binary.BigEndian.Uint16(o[24:])) != len(o)-20 {
		t.Errorf("outer headers %x", o[:28])
	}
	if e := binary.BigEndian.Uint32(o[28:]); e != 1002<<12|1<<8|63 {
		t.Errorf("label entry %#x", e)
	}
	if string(o[32:]) != string(in[14:]) {
		t.Errorf("inner packet changed")
	}
	copy(in[14+16:], netip.MustParseAddr("10.9.0.2").AsSlice())
	if rc, err := l.prog.Run(&ebpf.RunOptions{Data: in}); err != nil || rc != bpfLWTDrop {
		t.Errorf("unrouted destination: return %d (%v), want %d (drop)", rc, err, bpfLWTDrop)
	}
}
