package server

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The API's connections keep the system's TCP keepalive idle time, not
// Go's 15 s: with gRPC's TCP_USER_TIMEOUT of 20 s, one lost probe would
// close the connection.
func TestAPIListenerKeepsSystemKeepalive(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_keepalive_time")
	if err != nil {
		t.Skip("no /proc/sys/net/ipv4/tcp_keepalive_time")
	}
	want, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := listenAPI(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := (&net.Dialer{}).DialContext(ctx, "tcp", l.Addr().String()); err == nil {
			<-ctx.Done()
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on, idle int
	var serr error
	raw.Control(func(fd uintptr) {
		if on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); serr == nil {
			idle, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		}
	})
	if serr != nil {
		t.Fatal(serr)
	}
	if on == 0 || idle != want {
		t.Errorf("accepted connection: SO_KEEPALIVE %d, TCP_KEEPIDLE %d s; want keepalive on with the system's idle time, %d s", on, idle, want)
	}
}
