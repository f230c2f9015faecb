package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/iotfabric/iotfabric/pkg/validate"
)

// DefaultSocket is where the vrouter agent listens for the plugin.
const DefaultSocket = "/run/iotfabric/cni.sock"

// NetConf is the plugin's configuration.
type NetConf struct {
	types.PluginConf
	// Socket of the local vrouter agent.
	Socket string `json:"socket,omitempty"`
	// Network the pods of this configuration join. Empty: the network mapped
	// from the pod's namespace (NamespaceNetworks, else the agent's mapping).
	Network string `json:"network,omitempty"`
	// NamespaceNetworks maps Kubernetes namespaces to networks.
	NamespaceNetworks map[string]string `json:"namespaceNetworks,omitempty"`
	// MTU of the veth pair (0: the kernel's default).
	MTU int `json:"mtu,omitempty"`
	// TimeoutSeconds bounds each call to the agent (default 30).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// Limits of the configuration.
const (
	maxSocketPath        = 107 // sun_path
	maxNamespaceNetworks = 10000
)

// parseConfig decodes the configuration, applies defaults, then validates it.
// Errors are CNI errors that say what to fix.
func parseConfig(data []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "the network configuration is not valid JSON", err.Error())
	}
	if conf.Socket == "" {
		conf.Socket = DefaultSocket
	}
	if conf.TimeoutSeconds == 0 {
		conf.TimeoutSeconds = 30
	}
	switch {
	case conf.CNIVersion == "":
		return nil, types.NewError(types.ErrInvalidNetworkConfig, `"cniVersion" is missing: use "1.1.0"`, "")
	case !filepath.IsAbs(conf.Socket):
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"socket" %s must be an absolute path`, validate.Quote(conf.Socket)), "")
	case conf.MTU != 0 && (conf.MTU < 576 || conf.MTU > 65535):
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"mtu" %d: use 576 to 65535, or leave it out`, conf.MTU), "")
	case conf.TimeoutSeconds < 1 || conf.TimeoutSeconds > 600:
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"timeoutSeconds" %d: use 1 to 600`, conf.TimeoutSeconds), "")
	case len(conf.Socket) > maxSocketPath:
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"socket" %s is too long for a unix socket path (at most %d bytes)`, validate.Quote(conf.Socket), maxSocketPath), "")
	}
	if conf.Network != "" {
		if err := validate.Name("network", conf.Network); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, `"network": `+err.Error(), "")
		}
	}
	if len(conf.NamespaceNetworks) > maxNamespaceNetworks {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"namespaceNetworks" has %d entries: the limit is %d`, len(conf.NamespaceNetworks), maxNamespaceNetworks), "")
	}
	for ns, n := range conf.NamespaceNetworks {
		if err := validate.Name("network", n); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"namespaceNetworks": namespace %s: %v`, validate.Quote(ns), err), "")
		}
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "prevResult cannot be parsed", err.Error())
		}
		if _, err := current.NewResultFromResult(conf.PrevResult); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "prevResult cannot be converted to "+current.ImplementedSpecVersion, err.Error())
		}
	}
	return conf, nil
}

func (c *NetConf) timeout() time.Duration { return time.Duration(c.TimeoutSeconds) * time.Second }
