package agent_test

import (
	"context"
	"flag"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestMutualTLS: an agent with a certificate of the controller's CA gets its
// route stream; one with a certificate of another CA is refused.
func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "iotfabric-ca")
	stc, err := tlsconfig.Server(ca.Issue("controller"))
	if err != nil {
		t.Fatal(err)
	}
	ctl := fabrictest.StartController(t, grpc.Creds(credentials.NewTLS(stc)))
	admin, err := tlsconfig.Client(ca.Admin("admin"))
	if err != nil {
		t.Fatal(err)
	}
	api := ctl.Dial(grpc.WithTransportCredentials(credentials.NewTLS(admin)))
	createNetwork(t, api, "red", "10.4.0.0/16")

	run := func(name string, files tlsconfig.Files) (live chan struct{}, stop func()) {
		var f agent.Flags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		f.Register(fs)
		dir := t.TempDir()
		if err := fs.Parse([]string{"--gateway", name, "--underlay", "192.0.2.77", "--controller", ctl.Addr,
			"--state-dir", filepath.Join(dir, "state"), "--cni-socket", filepath.Join(dir, "cni.sock"),
			"--tls-cert", files.Cert, "--tls-key", files.Key, "--tls-ca", files.CA}); err != nil {
			t.Fatal(err)
		}
		opts, err := f.Options(nil)
		if err != nil {
			t.Fatal(err)
		}
		live = make(chan struct{}, 1)
		opts.OnSession = func(_ string, up bool) {
			if up {
				select {
				case live <- struct{}{}:
				default:
				}
			}
		}
		a, err := agent.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); a.Run(ctx) }()
		stop = func() { cancel(); <-done }
		t.Cleanup(stop)
		return live, stop
	}
	good, _ := run("gw-good", ca.Gateway("gw-good"))
	select {
	case <-good:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent with a certificate of the controller's CA got no route stream")
	}
	other := tlstest.NewCA(t, "another-ca")
	bad := other.Gateway("gw-bad")
	bad.CA = ca.Path // it trusts the controller; the controller does not trust it
	badLive, stopBad := run("gw-bad", bad)
	select {
	case <-badLive:
		t.Fatal("an agent with an unknown certificate got a route stream")
	case <-time.After(time.Second):
	}
	stopBad()
	if _, err := api.GW.GetGateway(context.Background(), &v1.NameRequest{Name: "gw-bad"}); err == nil {
		t.Fatal("the refused agent registered its gateway")
	}
}
