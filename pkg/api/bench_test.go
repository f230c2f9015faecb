package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// benchServer serves the resource services over mutual TLS, with the
// Authorizer (and an audit log to a discarding text handler, so that the
// lines are formatted) or without, and returns an admin's connection.
func benchServer(b testing.TB, authz bool) (*grpc.ClientConn, *controller.Controller) {
	ca := tlstest.NewCA(b, "ca")
	sc, err := tlsconfig.Server(ca.Issue("controller"))
	if err != nil {
		b.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"), bolt.Options{}) // fsync on, as make bench-controller
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	c := controller.New(st, controller.Config{})
	opts := []grpc.ServerOption{grpc.Creds(credentials.NewTLS(sc)), grpc.MaxRecvMsgSize(256 << 20)}
	if authz {
		// As the controller installs it: with the revoked certificates
		// (a controller alone on its bbolt file: no watch).
		revs := enroll.NewRevocations(st, false, nil)
		rctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		go revs.Run(rctx)
		<-revs.Ready()
		a := &Authorizer{Audit: slog.New(slog.NewTextHandler(discard{}, nil)).With("component", "audit"), Revocations: revs}
		opts = append(opts, grpc.UnaryInterceptor(a.Unary), grpc.StreamInterceptor(a.Stream))
	}
	gs := grpc.NewServer(opts...)
	Services{Controller: c}.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go gs.Serve(lis)
	b.Cleanup(gs.Stop)
	cc, err := tlsconfig.Client(ca.Admin("admin"))
	if err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn, c
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// createEndpoints creates n endpoints in one bulk call through the API
// over mutual TLS, with or without authorization, and returns how long the
// call took.
func createEndpoints(tb testing.TB, authz bool, n int) time.Duration {
	conn, c := benchServer(tb, authz)
	ctx := context.Background()
	if _, err := c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.64.0.0/10"}}); err != nil {
		tb.Fatal(err)
	}
	for g := 0; g < 50; g++ {
		c.CreateGateway(ctx, &v1.Gateway{Name: fmt.Sprint("gw", g), UnderlayAddress: fmt.Sprintf("192.0.2.%d", g+1)})
	}
	req := &v1.CreateEndpointsRequest{Endpoints: make([]*v1.Endpoint, n)}
	for i := range req.Endpoints {
		req.Endpoints[i] = &v1.Endpoint{Id: fmt.Sprint("ep", i), Network: "n", Gateway: fmt.Sprint("gw", i%50), Label: uint32(16 + i/50)}
	}
	start := time.Now()
	resp, err := v1.NewEndpointServiceClient(conn).CreateEndpoints(ctx, req)
	took := time.Since(start)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range resp.Errors {
		if e != "" {
			tb.Fatal(e)
		}
	}
	return took
}

// BenchmarkCreateEndpointsAuthz is make bench-controller's bulk creation
// through the API over mutual TLS, with and without authorization.
func BenchmarkCreateEndpointsAuthz(b *testing.B) {
	for _, authz := range []bool{false, true} {
		b.Run(fmt.Sprintf("authz=%t", authz), func(b *testing.B) {
			took := createEndpoints(b, authz, b.N)
			b.ReportMetric(float64(b.N)/took.Seconds(), "endpoints/s")
		})
	}
}

// createEndpointsOneByOne creates n endpoints with one CreateEndpoint call
// each (authorization and an audit line per endpoint), and returns how long
// they took.
func createEndpointsOneByOne(tb testing.TB, authz bool, n int) time.Duration {
	conn, c := benchServer(tb, authz)
	ctx := context.Background()
	if _, err := c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.64.0.0/10"}}); err != nil {
		tb.Fatal(err)
	}
	if _, err := c.CreateGateway(ctx, &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}); err != nil {
		tb.Fatal(err)
	}
	cl := v1.NewEndpointServiceClient(conn)
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := cl.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: fmt.Sprint("ep", i), Network: "n", Gateway: "gw", Label: uint32(16 + i)}}); err != nil {
			tb.Fatal(err)
		}
	}
	return time.Since(start)
}

// TestBenchCreateEndpointsAuthz is make bench-controller's on/off figure:
// endpoints created through the API over mutual TLS, with authorization on
// and off, alternately and in alternating order (the machine's noise spread
// over both): IOTFABRIC_BENCH_AUTHZ endpoints in one bulk call (what make
// bench-controller measures without the API), and a tenth as many with one
// call each (authorization and audit per endpoint: the worst case). The best
// of 7 rounds of each is compared (the least disturbed by other load).
func TestBenchCreateEndpointsAuthz(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("IOTFABRIC_BENCH_AUTHZ"))
	if n <= 0 {
		t.Skip("benchmark: run with IOTFABRIC_BENCH_AUTHZ=<endpoints> (make bench-controller)")
	}
	const rounds = 7
	for _, m := range []struct {
		name string
		n    int
		run  func(testing.TB, bool, int) time.Duration
	}{{"bulk", n, createEndpoints}, {"one call each", n / 10, createEndpointsOneByOne}} {
		best := map[bool]float64{}
		for round := 0; round < rounds; round++ {
			order := []bool{false, true}
			if round%2 == 1 {
				order = []bool{true, false}
			}
			for _, authz := range order {
				// A subtest, so that each server and store is gone before the next.
				t.Run(fmt.Sprintf("%s-round%d-authz=%t", m.name, round, authz), func(t *testing.T) {
					best[authz] = max(best[authz], float64(m.n)/m.run(t, authz, m.n).Seconds())
				})
			}
		}
		fmt.Printf("bench-controller authz: %d endpoints, %s, over mutual TLS, best of %d: off %.0f endpoints/s, on %.0f endpoints/s, overhead %.1f %%\n",
			m.n, m.name, rounds, best[false], best[true], 100*(best[false]-best[true])/best[false])
	}
}

// BenchmarkUnaryAuthz is the cost of authorization on a small read over
// mutual TLS (the worst case: the call does little else).
func BenchmarkUnaryAuthz(b *testing.B) {
	for _, authz := range []bool{false, true} {
		b.Run(fmt.Sprintf("authz=%t", authz), func(b *testing.B) {
			conn, c := benchServer(b, authz)
			ctx := context.Background()
			if _, err := c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.64.0.0/10"}}); err != nil {
				b.Fatal(err)
			}
			cl := v1.NewNetworkServiceClient(conn)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := cl.GetNetwork(ctx, &v1.NameRequest{Name: "n"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAuthorizerUnary is the interceptor alone: a gateway's verified
// certificate, checked for expiry and revocation, a mutating call checked
// against its gateway and audited.
func BenchmarkAuthorizerUnary(b *testing.B) {
	ca := tlstest.NewCA(b, "ca")
	f := ca.Gateway("gw-1")
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		b.Fatal(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}})
	st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	revs := enroll.NewRevocations(st, false, nil)
	revs.Run(context.Background()) // lists, then returns (no watch)
	info := &grpc.UnaryServerInfo{FullMethod: v1.AgentService_LeaseBlock_FullMethodName}
	req := &v1.LeaseBlockRequest{Gateway: "gw-1", Network: "n", Family: 4}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	for _, withRevs := range []bool{false, true} {
		b.Run(fmt.Sprintf("revocations=%t", withRevs), func(b *testing.B) {
			a := &Authorizer{Audit: slog.New(slog.NewTextHandler(discard{}, nil)).With("component", "audit")}
			if withRevs {
				a.Revocations = revs
			}
			for i := 0; i < b.N; i++ {
				if _, err := a.Unary(ctx, req, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
