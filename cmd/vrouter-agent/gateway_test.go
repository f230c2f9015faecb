package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/cni"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func TestGatewayModeFlags(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{
		{"--gateway", "gw1"}, // no --underlay
		{"--gateway", "gw1", "--underlay", "192.0.2.1", "--state", "x"},
		{"--gateway", "gw1", "--underlay", "192.0.2.1", "--state-dir", "relative"},
		{"--gateway", "gw1", "--underlay", "192.0.2.1", "--tls-cert", "c.pem"},
	} {
		out.Reset()
		if rc := run(args, &out); rc != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, rc, out.String())
		}
	}
}

// TestGatewayModeServesCNI: vrouter-agent --gateway registers with the
// controller, serves the CNI socket, and stops on SIGTERM.
func TestGatewayModeServesCNI(t *testing.T) {
	netnstest.RequireRoot(t)
	ctl := fabrictest.StartController(t)
	gw := netnstest.New(t, "iofgwmode")
	dir := t.TempDir()
	sock := filepath.Join(dir, "cni.sock")
	var log syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--gateway", "gw-cli", "--underlay", "192.0.2.44", "--controller", ctl.Addr,
			"--netns", gw.Path(), "--state-dir", filepath.Join(dir, "state"), "--cni-socket", sock}, &log)
	}()
	api := ctl.Dial()
	client := &cni.Client{Path: sock}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, errS := client.Do(context.Background(), &cni.Request{Op: cni.OpStatus})
		_, errG := api.GW.GetGateway(context.Background(), &v1.NameRequest{Name: "gw-cli"})
		if errS == nil && errG == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving and registered within 20s: %v / %v\n%s", errS, errG, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case rc := <-done:
		if rc != 0 || !strings.Contains(log.String(), "data plane stays") {
			t.Fatalf("exit %d:\n%s", rc, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}
