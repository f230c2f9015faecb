package gobgp_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	gbgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
)

// rawPeer is a minimal BGP speaker on one accepted connection, for sending
// what a correct implementation never would.
type rawPeer struct {
	t    *testing.T
	conn net.Conn
}

func (p *rawPeer) read() gbgp.BGPMessage {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	hdr := make([]byte, gbgp.BGP_HEADER_LENGTH)
	if _, err := io.ReadFull(p.conn, hdr); err != nil {
		p.t.Fatalf("raw peer: read header: %v", err)
	}
	n := int(binary.BigEndian.Uint16(hdr[16:18]))
	if n < gbgp.BGP_HEADER_LENGTH || n > 4096 {
		p.t.Fatalf("raw peer: message length %d", n)
	}
	buf := make([]byte, n)
	copy(buf, hdr)
	if _, err := io.ReadFull(p.conn, buf[gbgp.BGP_HEADER_LENGTH:]); err != nil {
		p.t.Fatalf("raw peer: read body: %v", err)
	}
	m, err := gbgp.ParseBGPMessage(buf)
	if err != nil {
		p.t.Fatalf("raw peer: parse: %v", err)
	}
	return *m
}

func (p *rawPeer) write(b []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatalf("raw peer: write: %v", err)
	}
}

// TestMalformedUpdate: a peer that sends a malformed UPDATE is reset with a
// NOTIFICATION (UPDATE Message Error); the speaker keeps running and its
// session with FRR stays up with its routes.
func TestMalformedUpdate(t *testing.T) {
	bgptest.RequireRoot(t)
	good := link(t)
	bad := link(t)
	frr := bgptest.StartFRR(t, good.peerNS, bgptest.FRRConfig{
		ASN: asn, RouterID: good.peer,
		Neighbors: []bgptest.FRRNeighbor{{Address: good.local, ASN: asn}},
	})
	l, err := bad.peerNS.Listen("tcp", net.JoinHostPort(bad.peer.String(), "179"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	s := newSpeaker(t, good.local,
		bgp.PeerConfig{Address: good.peer, ASN: asn},
		bgp.PeerConfig{Address: bad.peer, ASN: asn})
	routes := endpointRoutes(t, mustAddr("192.0.2.10"), 1001, "10.1.0.5")
	startSpeaker(t, s, routes)
	waitPeer(t, s, good.peer, bgp.PeerEstablished)
	ctx := context.Background()
	if err := frr.WaitEstablished(ctx, good.local, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	before, err := frr.Summary(ctx, "ipv4 vpn")
	if err != nil {
		t.Fatal(err)
	}

	// The raw peer: OPEN, KEEPALIVE, then a broken UPDATE.
	conn, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &rawPeer{t: t, conn: conn}
	if m := p.read(); m.Header.Type != gbgp.BGP_MSG_OPEN {
		t.Fatalf("first message type %d, want OPEN", m.Header.Type)
	}
	caps := []gbgp.ParameterCapabilityInterface{
		gbgp.NewCapMultiProtocol(gbgp.RF_IPv4_VPN),
		gbgp.NewCapFourOctetASNumber(asn),
	}
	open, err := gbgp.NewBGPOpenMessage(asn, 90, bad.peer.String(), []gbgp.OptionParameterInterface{gbgp.NewOptionParameterCapability(caps)}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	ka, err := gbgp.NewBGPKeepAliveMessage().Serialize()
	if err != nil {
		t.Fatal(err)
	}
	p.write(open)
	p.write(ka)
	for {
		m := p.read()
		if m.Header.Type == gbgp.BGP_MSG_KEEPALIVE {
			break
		}
		if m.Header.Type == gbgp.BGP_MSG_NOTIFICATION {
			t.Fatalf("speaker refused the raw peer's OPEN: %+v", m.Body)
		}
	}
	waitPeer(t, s, bad.peer, bgp.PeerEstablished)

	// UPDATE whose Total Path Attribute Length runs past the message.
	update := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0, 30, gbgp.BGP_MSG_UPDATE,
		0, 0, // withdrawn routes length
		0, 200, // total path attribute length: 200, but only 7 bytes follow
		0x40, 1, 1, 0, // ORIGIN IGP
		0x40, 2, 0, // AS_PATH, empty
	}
	binary.BigEndian.PutUint16(update[16:], uint16(len(update)))
	p.write(update)

	var notif *gbgp.BGPNotification
	for notif == nil {
		m := p.read()
		if m.Header.Type == gbgp.BGP_MSG_NOTIFICATION {
			notif = m.Body.(*gbgp.BGPNotification)
		}
	}
	if notif.ErrorCode != gbgp.BGP_ERROR_UPDATE_MESSAGE_ERROR {
		t.Errorf("NOTIFICATION %d/%d, want UPDATE Message Error (3)", notif.ErrorCode, notif.ErrorSubcode)
	}
	t.Logf("raw peer got NOTIFICATION %d/%d", notif.ErrorCode, notif.ErrorSubcode)

	// The speaker lives on and resets the bad session (its state changes
	// right after the NOTIFICATION is written); the FRR session was not touched.
	err = bgptest.Eventually(ctx, 5*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		ps, err := s.ListPeers(ctx)
		if err != nil {
			return err
		}
		for _, st := range ps {
			if st.Address == bad.peer && st.State == bgp.PeerEstablished {
				return fmt.Errorf("malformed peer still established")
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	ps, err := s.ListPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range ps {
		if st.Address == good.peer && st.State != bgp.PeerEstablished {
			t.Errorf("FRR session is %s", st.State)
		}
	}
	after, err := frr.Summary(ctx, "ipv4 vpn")
	if err != nil {
		t.Fatal(err)
	}
	b, a := before[good.local], after[good.local]
	if a.State != "Established" || a.ConnectionsDropped != b.ConnectionsDropped || a.ConnectionsEstablished != b.ConnectionsEstablished {
		t.Errorf("FRR session changed: before %+v, after %+v", b, a)
	}
	if a.PfxRcd != 1 {
		t.Errorf("FRR holds %d prefixes, want 1", a.PfxRcd)
	}
	// And it still takes updates.
	more := endpointRoutes(t, mustAddr("192.0.2.10"), 1002, "10.1.0.6")
	if err := s.Announce(ctx, more); err != nil {
		t.Fatal(err)
	}
	err = bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		n, err := frr.Prefixes(ctx, "ipv4 vpn", good.local)
		if err == nil && n != 2 {
			err = fmt.Errorf("FRR holds %d prefixes, want 2", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
