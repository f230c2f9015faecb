package overlaytest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// Ping sends ICMP echo requests from inside the namespace to dst until one is
// answered or timeout passes.
func (n *NS) Ping(dst netip.Addr, timeout time.Duration) error {
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

// Sink starts a TCP server in the namespace that reads and discards; it answers
// each connection with the byte count it read, when the sender closes.
func (n *NS) Sink(t testing.TB, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				k, _ := io.Copy(io.Discard, c)
				_ = binary.Write(c, binary.BigEndian, uint64(k))
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// Transfer sends size bytes over one TCP connection from inside the namespace
// to a Sink and returns how long it took until the sink confirmed them all.
func (n *NS) Transfer(to netip.AddrPort, size int64) (time.Duration, error) {
	var d time.Duration
	err := n.Do(func() error {
		c, err := net.DialTimeout("tcp", to.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		buf := make([]byte, 128<<10)
		for i := range buf {
			buf[i] = byte(i)
		}
		var sent int64
		for sent < size {
			k := min(int64(len(buf)), size-sent)
			w, err := c.Write(buf[:k])
			sent += int64(w)
			if err != nil {
				return fmt.Errorf("after %d bytes: %w", sent, err)
			}
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		var got uint64
		if err := binary.Read(c, binary.BigEndian, &got); err != nil {
			return fmt.Errorf("sink confirmation: %w", err)
		}
		d = time.Since(start)
		if int64(got) != size {
			return errors.New("sink received a different byte count")
		}
		return nil
	})
	return d, err
}
