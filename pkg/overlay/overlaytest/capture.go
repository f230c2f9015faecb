package overlaytest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/internal/netnstest"
)

// OverlayPacket is what DecodeOverlay found in one frame of the underlay.
type OverlayPacket struct {
	Encap    string // "mplsoudp" or "mplsogre" (pkg/encap names)
	UDPDst   uint16 // MPLSoUDP: UDP destination port
	GREProto uint16 // MPLSoGRE: GRE protocol type
	Label    uint32
	LabelTTL uint8
	BOS      bool // bottom of stack on Label
	Stack    int  // number of labels
	InnerSrc netip.Addr
	InnerDst netip.Addr
	InnerTTL uint8
	// InnerChecksumOK: the inner IPv4 header checksum verifies.
	InnerChecksumOK bool
	InnerLen        int
}

// ipv4HeaderSum is the ones' complement sum of an IPv4 header (0xffff when
// its checksum verifies).
func ipv4HeaderSum(b []byte) uint16 {
	if len(b) < 20 || int(b[0]&0xf)*4 > len(b) {
		return 0
	}
	var s uint32
	for i := 0; i < int(b[0]&0xf)*4; i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func (p OverlayPacket) String() string {
	s := fmt.Sprintf("%s label %d bos %v", p.Encap, p.Label, p.BOS)
	if p.Encap == "mplsoudp" {
		s += fmt.Sprintf(" udp dport %d", p.UDPDst)
	} else {
		s += fmt.Sprintf(" gre proto %#04x", p.GREProto)
	}
	return s + fmt.Sprintf(" inner %s -> %s", p.InnerSrc, p.InnerDst)
}

// ErrNotOverlay is returned for frames that carry no MPLSoUDP/MPLSoGRE packet.
var ErrNotOverlay = errors.New("not an MPLSoUDP or MPLSoGRE packet")

// DecodeOverlay decodes an Ethernet frame from the underlay with gopacket and
// returns the MPLS overlay packet inside it: outer IPv4, then UDP to
// udpPort or GRE with protocol 0x8847, one or more MPLS labels, inner IPv4.
func DecodeOverlay(frame []byte, udpPort uint16) (OverlayPacket, error) {
	var p OverlayPacket
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	ip4, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip4 == nil {
		return p, ErrNotOverlay
	}
	var mplsPayload []byte
	switch ip4.Protocol {
	case layers.IPProtocolUDP:
		udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if udp == nil || uint16(udp.DstPort) != udpPort {
			return p, ErrNotOverlay
		}
		p.Encap, p.UDPDst = "mplsoudp", uint16(udp.DstPort)
		mplsPayload = udp.Payload
	case layers.IPProtocolGRE:
		gre, _ := pkt.Layer(layers.LayerTypeGRE).(*layers.GRE)
		if gre == nil || gre.Protocol != layers.EthernetTypeMPLSUnicast {
			return p, ErrNotOverlay
		}
		p.Encap, p.GREProto = "mplsogre", uint16(gre.Protocol)
		mplsPayload = gre.Payload
	default:
		return p, ErrNotOverlay
	}
	inner := gopacket.NewPacket(mplsPayload, layers.LayerTypeMPLS, gopacket.DecodeOptions{NoCopy: true})
	for _, l := range inner.Layers() {
		m, ok := l.(*layers.MPLS)
		if !ok {
			continue
		}
		if p.Stack == 0 {
			p.Label, p.BOS, p.LabelTTL = m.Label, m.StackBottom, m.TTL
		}
		p.Stack++
	}
	if p.Stack == 0 {
		return p, fmt.Errorf("%s without an MPLS label: %w", p.Encap, ErrNotOverlay)
	}
	in4, _ := inner.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if in4 == nil {
		return p, fmt.Errorf("%s label %d without an inner IPv4 packet: %w", p.Encap, p.Label, ErrNotOverlay)
	}
	var ok1, ok2 bool
	p.InnerSrc, ok1 = netip.AddrFromSlice(in4.SrcIP.To4())
	p.InnerDst, ok2 = netip.AddrFromSlice(in4.DstIP.To4())
	if !ok1 || !ok2 {
		return p, fmt.Errorf("%s label %d: truncated inner IPv4 header: %w", p.Encap, p.Label, ErrNotOverlay)
	}
	p.InnerTTL = in4.TTL
	p.InnerChecksumOK = ipv4HeaderSum(mplsPayload[4*p.Stack:]) == 0xffff
	p.InnerLen = int(in4.Length)
	return p, nil
}

// Capture reads every frame of one interface of a namespace through an
// AF_PACKET socket (no cgo, no libpcap).
type Capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

func htons(v uint16) uint16 { return binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, v)) }

// StartCapture opens the capture on ifname in ns; it stops when the test ends.
func StartCapture(t testing.TB, ns *netnstest.NS, ifname string) *Capture {
	t.Helper()
	l, err := ns.Handle().LinkByName(ifname)
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	var fd int
	err = ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index})
	})
	if err != nil {
		t.Fatalf("capture socket on %s: %v", ifname, err)
	}
	tv := unix.Timeval{Usec: 100000}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	c := &Capture{fd: fd, done: make(chan struct{})}
	stop := make(chan struct{})
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, append([]byte(nil), buf[:n]...))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-c.done
		unix.Close(fd)
	})
	return c
}

// Reset forgets the frames captured so far.
func (c *Capture) Reset() {
	c.mu.Lock()
	c.frames = nil
	c.mu.Unlock()
}

// Find waits up to timeout for a captured overlay packet matching pred.
func (c *Capture) Find(udpPort uint16, timeout time.Duration, pred func(OverlayPacket) bool) (OverlayPacket, bool) {
	deadline := time.Now().Add(timeout)
	seen := 0
	for {
		c.mu.Lock()
		frames := c.frames[seen:]
		seen = len(c.frames)
		c.mu.Unlock()
		for _, f := range frames {
			if p, err := DecodeOverlay(f, udpPort); err == nil && pred(p) {
				return p, true
			}
		}
		if time.Now().After(deadline) {
			return OverlayPacket{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
