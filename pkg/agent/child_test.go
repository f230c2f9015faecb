package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// childEnv makes the test binary run an agent process (so that tests can
// SIGKILL it), configured by the JSON in the variable.
const childEnv = "IOTFABRIC_AGENT_CHILD"

type childConfig struct {
	Gateway     string   `json:"gateway"`
	Underlay    string   `json:"underlay"`
	StateDir    string   `json:"stateDir"`
	Netns       string   `json:"netns"`
	Socket      string   `json:"socket"`
	Controllers []string `json:"controllers"`
}

func childMain() int {
	var cc childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &cc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	m, err := overlay.New(ctx, overlay.Config{NetNS: cc.Netns, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer m.Close()
	a, err := agent.New(agent.Options{
		Config:      agent.Config{Gateway: cc.Gateway, Underlay: netip.MustParseAddr(cc.Underlay), StateDir: cc.StateDir, Log: log},
		Controllers: cc.Controllers, DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Applier: m, HostNetns: cc.Netns, CNISocket: cc.Socket,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() {
		<-a.Ready()
		fmt.Println("ready")
	}()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
