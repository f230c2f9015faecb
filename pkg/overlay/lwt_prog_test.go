package overlay

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/iotfabric/iotfabric/internal/testenv"
)

// TestLWTProgram loads the lwt alternative (the verifier accepts it) and runs
// it with BPF_PROG_TEST_RUN.
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
	// BPF_PROG_TEST_RUN gives the packet no route, which
	// bpf_lwt_push_encap needs: a routed destination fails the push and is
	// dropped there; the VM benchmark checks the headers on the wire.
	for _, dst := range []string{"10.1.0.2", "10.9.0.2"} {
		copy(in[14+16:], netip.MustParseAddr(dst).AsSlice())
		rc, err := l.prog.Run(&ebpf.RunOptions{Data: in})
		if err != nil {
			t.Fatal(err)
		}
		if rc != bpfLWTDrop {
			t.Errorf("%s: return %d, want %d (drop)", dst, rc, bpfLWTDrop)
		}
	}
}
