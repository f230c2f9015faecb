package tlsconfig_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
)

func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "iotfabric-ca")
	srvCfg, err := tlsconfig.Server(ca.Issue("controller"))
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvCfg)))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go gs.Serve(lis)
	defer gs.Stop()

	call := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	good, err := tlsconfig.Client(ca.Issue("gw-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := call(credentials.NewTLS(good)); err != nil {
		t.Fatalf("agent with a certificate from the CA: %v", err)
	}
	other := tlstest.NewCA(t, "someone-else")
	stranger := other.Issue("gw-evil")
	stranger.CA = ca.Path // trusts the controller, but its own certificate is from another CA
	bad, _ := tlsconfig.Client(stranger)
	if err := call(credentials.NewTLS(bad)); err == nil {
		t.Fatal("a certificate from an unknown CA was accepted")
	}
	noCert := good.Clone()
	noCert.Certificates = nil
	if err := call(credentials.NewTLS(noCert)); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	if err := call(insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext client was accepted")
	}
	if _, err := tlsconfig.Server(tlsconfig.Files{Cert: "x"}); err == nil {
		t.Fatal("incomplete TLS files accepted")
	}
}
