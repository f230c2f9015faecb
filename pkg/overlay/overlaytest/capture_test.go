package overlaytest

import (
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// overlayFrame builds Ethernet/IPv4/(UDP 6635 | GRE 0x8847)/MPLS/IPv4/ICMP.
func overlayFrame(t testing.TB, gre bool, label uint32) []byte {
	inner := &layers.IPv4{Version: 4, IHL: 5, TTL: 63, Protocol: layers.IPProtocolICMPv4,
		SrcIP: net.IPv4(10, 1, 0, 1), DstIP: net.IPv4(10, 1, 0, 2)}
	mpls := &layers.MPLS{Label: label, StackBottom: true, TTL: 63}
	outer := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, SrcIP: net.IPv4(192, 0, 2, 1), DstIP: net.IPv4(192, 0, 2, 2)}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var ls []gopacket.SerializableLayer
	if gre {
		outer.Protocol = layers.IPProtocolGRE
		ls = []gopacket.SerializableLayer{eth, outer, &layers.GRE{Protocol: layers.EthernetTypeMPLSUnicast}, mpls, inner, icmp}
	} else {
		outer.Protocol = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: 50000, DstPort: 6635}
		_ = udp.SetNetworkLayerForChecksum(outer)
		ls = []gopacket.SerializableLayer{eth, outer, udp, mpls, inner, icmp}
	}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeOverlay(t *testing.T) {
	for _, gre := range []bool{false, true} {
		p, err := DecodeOverlay(overlayFrame(t, gre, 1002), 6635)
		if err != nil {
			t.Fatalf("gre=%v: %v", gre, err)
		}
		if p.Label != 1002 || !p.BOS || p.Stack != 1 || p.InnerSrc.String() != "10.1.0.1" || p.InnerDst.String() != "10.1.0.2" {
			t.Errorf("gre=%v: decoded %+v", gre, p)
		}
		if gre && (p.Encap != "mplsogre" || p.GREProto != 0x8847) || !gre && (p.Encap != "mplsoudp" || p.UDPDst != 6635) {
			t.Errorf("gre=%v: encapsulation %+v", gre, p)
		}
	}
	if _, err := DecodeOverlay(overlayFrame(t, false, 1002), 4789); err == nil {
		t.Error("UDP to another port decoded as MPLSoUDP")
	}
}

// FuzzDecodeOverlay: arbitrary frames never panic the capture decoder.
func FuzzDecodeOverlay(f *testing.F) {
	f.Add(overlayFrame(f, false, 1002))
	f.Add(overlayFrame(f, true, 16))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, err := DecodeOverlay(frame, 6635)
		if err == nil && (p.Stack == 0 || !p.InnerSrc.IsValid()) {
			t.Fatalf("decoded without label or inner packet: %+v", p)
		}
	})
}
