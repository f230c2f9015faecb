package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
)

// TestBenchTLSReconnect is make bench-tls: IOTFABRIC_BENCH_TLS gateways
// (1,000), each with its own certificate, connect to a controller serving
// mutual TLS with enrollment on (the verification agents meet), all with
// full handshakes, then all again resuming their TLS 1.3 sessions (tickets),
// 16 at a time; each connection does the handshake, sends the HTTP/2 preface
// and reads the controller's first frame (the session ticket comes with it).
// It prints the controller's handshakes/s both ways and their ratio.
func TestBenchTLSReconnect(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("IOTFABRIC_BENCH_TLS"))
	if n <= 0 {
		t.Skip("benchmark: run with IOTFABRIC_BENCH_TLS=<gateways> (make bench-tls)")
	}
	const conc = 16
	ca := tlstest.NewCA(t, "iotfabric-ca")
	c := startEnroll(t, ca, enrollConfig(ca, DefaultCertLifetime, DefaultRenewGrace), nil)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(mustPEMFile(t, ca.Path))
	gws := make([]*tls.Config, n)
	for i := range gws {
		f := ca.Gateway(fmt.Sprintf("gw-%d", i))
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		gws[i] = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13,
			ClientSessionCache: tls.NewLRUClientSessionCache(1), NextProtos: []string{"h2"}}
	}
	round := func(addr string) (time.Duration, int) {
		var next, resumed atomic.Int64
		var wg sync.WaitGroup
		var firstErr error
		var once sync.Once
		start := time.Now()
		for range conc {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					r, err := connect(addr, gws[i])
					if err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					if r {
						resumed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			t.Fatal(firstErr)
		}
		return time.Since(start), int(resumed.Load())
	}
	// The same TLS configuration on a listener that does nothing else: the
	// handshakes alone.
	tc, err := serverTLS(enrollConfig(ca, DefaultCertLifetime, DefaultRenewGrace), newTestEnroller(t, ca), nil)
	if err != nil {
		t.Fatal(err)
	}
	tc.NextProtos = []string{"h2"}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				var pre [33]byte
				if _, err := io.ReadFull(conn, pre[:]); err == nil {
					conn.Write(make([]byte, 9)) // an empty SETTINGS frame's size
					io.Copy(io.Discard, conn)
				}
			}()
		}
	}()
	fmt.Printf("bench-tls: %d gateways reconnecting over mutual TLS 1.3 (ECDSA P-256), %d at a time\n", n, conc)
	for _, target := range []struct{ name, addr string }{{"controller (gRPC server)", c.c.Addr()}, {"TLS only", lis.Addr().String()}} {
		for _, s := range gws {
			s.ClientSessionCache = tls.NewLRUClientSessionCache(1) // full handshakes first
		}
		full, r0 := round(target.addr)
		res, r1 := round(target.addr)
		if r0 != 0 || r1 != n {
			t.Fatalf("%s: resumed %d of the first round and %d of %d of the second", target.name, r0, r1, n)
		}
		fullRate, resRate := float64(n)/full.Seconds(), float64(n)/res.Seconds()
		fmt.Printf("  %s\n", target.name)
		fmt.Printf("    full handshakes:    %7.0f handshakes/s (%v)\n", fullRate, full.Round(time.Millisecond))
		fmt.Printf("    resumed (tickets):  %7.0f handshakes/s (%v), %d of %d resumed\n", resRate, res.Round(time.Millisecond), r1, n)
		fmt.Printf("    ratio resumed/full: %.2f\n", resRate/fullRate)
	}
}

// newTestEnroller is an enrollment authority with ca's key, over no store.
func newTestEnroller(t *testing.T, ca *tlstest.CA) *enroll.Enroller {
	e, err := newEnroller(enrollConfig(ca, DefaultCertLifetime, DefaultRenewGrace), nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// connect makes one gateway connection: TLS, the HTTP/2 client preface, the
// server's first frame. It reports whether the session was resumed.
func connect(addr string, cfg *tls.Config) (bool, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(&d, "tcp", addr, cfg)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")); err != nil {
		return false, err
	}
	var hdr [9]byte
	if _, err := conn.Read(hdr[:]); err != nil {
		return false, fmt.Errorf("first frame: %w", err)
	}
	return conn.ConnectionState().DidResume, nil
}

func mustPEMFile(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
