package overlaytest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/internal/netnstest"
)

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// Ping sends ICMP echo requests from inside n to dst until one is
// answered or timeout passes.
func Ping(n *netnstest.NS, dst netip.Addr, timeout time.Duration) error {
	return n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return fmt.Errorf("icmp socket: %w", err)
		}
		defer unix.Close(fd)
		tv := unix.Timeval{Usec: 200000}
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		to := &unix.SockaddrInet4{Addr: dst.As4()}
		id := uint16(time.Now().UnixNano())
		deadline := time.Now().Add(timeout)
		buf := make([]byte, 1500)
		for seq := uint16(1); time.Now().Before(deadline); seq++ {
			req := []byte{8, 0, 0, 0, 0, 0, 0, 0}
			binary.BigEndian.PutUint16(req[4:], id)
			binary.BigEndian.PutUint16(req[6:], seq)
			req = append(req, []byte("iotfabric ping")...)
			binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
			if err := unix.Sendto(fd, req, 0, to); err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			wait := time.Now().Add(500 * time.Millisecond)
			for time.Now().Before(wait) {
				k, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					continue
				}
				if k < 20 {
					continue
				}
				ihl := int(buf[0]&0x0f) * 4
				if k < ihl+8 {
					continue
				}
				icmp := buf[ihl:k]
				src := netip.AddrFrom4([4]byte(buf[12:16]))
				if icmp[0] == 0 && src == dst && binary.BigEndian.Uint16(icmp[4:]) == id {
					return nil
				}
			}
		}
		return fmt.Errorf("no echo reply from %s within %s", dst, timeout)
	})
}

// TimeExceeded sends ICMP echo requests with TTL 1 from inside n to dst until
// an ICMP time exceeded (type 11) comes back, and returns its source: the
// first router on the way, which must not forward the packet.
func TimeExceeded(n *netnstest.NS, dst netip.Addr, timeout time.Duration) (netip.Addr, error) {
	var from netip.Addr
	err := n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return fmt.Errorf("icmp socket: %w", err)
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, 1); err != nil {
			return fmt.Errorf("IP_TTL: %w", err)
		}
		tv := unix.Timeval{Usec: 200000}
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		to := &unix.SockaddrInet4{Addr: dst.As4()}
		deadline := time.Now().Add(timeout)
		buf := make([]byte, 1500)
		for seq := uint16(1); time.Now().Before(deadline); seq++ {
			req := []byte{8, 0, 0, 0, 0x10, 0xf1, 0, 0}
			binary.BigEndian.PutUint16(req[6:], seq)
			binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
			if err := unix.Sendto(fd, req, 0, to); err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			wait := time.Now().Add(500 * time.Millisecond)
			for time.Now().Before(wait) {
				k, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil || k < 20 {
					continue
				}
				ihl := int(buf[0]&0x0f) * 4
				if k < ihl+8 {
					continue
				}
				if icmp := buf[ihl:k]; icmp[0] == 0 && netip.AddrFrom4([4]byte(buf[12:16])) == dst {
					return fmt.Errorf("echo reply from %s: a packet with TTL 1 was forwarded", dst)
				} else if icmp[0] == 11 {
					from = netip.AddrFrom4([4]byte(buf[12:16]))
					return nil
				}
			}
		}
		return fmt.Errorf("no ICMP time exceeded for %s within %s", dst, timeout)
	})
	return from, err
}

// FragNeeded sends ICMP echo requests of size bytes (IPv4 total length) with
// the don't-fragment bit from inside n to dst until an ICMP "fragmentation
// needed" comes back, and returns the MTU it reports. An echo reply is an
// error: the packet was not too big after all.
func FragNeeded(n *netnstest.NS, dst netip.Addr, size int, timeout time.Duration) (int, error) {
	mtu := 0
	err := n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return fmt.Errorf("icmp socket: %w", err)
		}
		defer unix.Close(fd)
		// DF set, the socket's own path MTU ignored: the gateway must answer.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE); err != nil {
			return fmt.Errorf("IP_MTU_DISCOVER: %w", err)
		}
		tv := unix.Timeval{Usec: 200000}
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		to := &unix.SockaddrInet4{Addr: dst.As4()}
		deadline := time.Now().Add(timeout)
		buf := make([]byte, 1500)
		for seq := uint16(1); time.Now().Before(deadline); seq++ {
			req := make([]byte, size-20)
			req[0], req[4], req[5] = 8, 0x10, 0xf2
			binary.BigEndian.PutUint16(req[6:], seq)
			binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
			if err := unix.Sendto(fd, req, 0, to); err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			wait := time.Now().Add(500 * time.Millisecond)
			for time.Now().Before(wait) {
				k, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil || k < 20 {
					continue
				}
				ihl := int(buf[0]&0x0f) * 4
				if k < ihl+8 {
					continue
				}
				icmp := buf[ihl:k]
				switch {
				case icmp[0] == 0 && netip.AddrFrom4([4]byte(buf[12:16])) == dst && icmp[4] == 0x10 && icmp[5] == 0xf2:
					return fmt.Errorf("echo reply from %s: %d bytes went through", dst, size)
				case icmp[0] == 3 && icmp[1] == 4:
					mtu = int(binary.BigEndian.Uint16(icmp[6:]))
					return nil
				}
			}
		}
		return fmt.Errorf("no ICMP fragmentation needed for %d bytes to %s within %s", size, dst, timeout)
	})
	return mtu, err
}
