package netnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// listen opens a TCP listener on addr:0 inside the namespace, closed by
// t.Cleanup, and serves each connection with serve.
func (n *NS) listen(t testing.TB, addr netip.Addr, serve func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := n.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("netnstest: listen in %s: %v", n.Name, err)
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
				serve(c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// Echo starts a TCP echo server inside the namespace on addr and a free
// port, and returns its address; it stops when the test ends.
func (n *NS) Echo(t testing.TB, addr netip.Addr) netip.AddrPort {
	t.Helper()
	// The wrappers keep io.Copy to plain reads and writes (no splice).
	return n.listen(t, addr, func(c net.Conn) { io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c}) })
}

// CheckEcho connects over TCP from inside the namespace to an Echo server,
// sends msg and returns an error unless msg comes back within 3 s.
func (n *NS) CheckEcho(to netip.AddrPort, msg string) error {
	return n.Do(func() error {
		c, err := net.DialTimeout("tcp", to.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("echo from %s: %w", to, err)
		}
		if string(buf) != msg {
			return fmt.Errorf("echo from %s: %q, want %q", to, buf, msg)
		}
		return nil
	})
}

// Sink starts a TCP server inside the namespace on addr and a free port
// that reads and discards; when the sender closes its side, it answers with
// the byte count it read (8 bytes, big endian). It stops when the test ends.
func (n *NS) Sink(t testing.TB, addr netip.Addr) netip.AddrPort {
	t.Helper()
	return n.listen(t, addr, func(c net.Conn) {
		k, _ := io.Copy(io.Discard, c)
		binary.Write(c, binary.BigEndian, uint64(k))
	})
}

// Transfer sends size bytes over one TCP connection from inside the
// namespace to a Sink and returns how long it took until the sink confirmed
// them all.
func (n *NS) Transfer(to netip.AddrPort, size int64) (time.Duration, error) {
	var d time.Duration
	err := n.Do(func() error {
		c, err := net.DialTimeout("tcp", to.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		buf := make([]byte, 128<<10)
		for i := range buf {
			buf[i] = byte(i)
		}
		var sent int64
		for sent < size {
			w, err := c.Write(buf[:min(int64(len(buf)), size-sent)])
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
