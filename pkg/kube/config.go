package kube

import (
	"fmt"
	"net/netip"
	"time"
)

// Config is the controller configuration's kubernetes section.
type Config struct {
	// Enabled turns the Kubernetes reconciler on.
	Enabled bool `yaml:"enabled"`
	// Kubeconfig is a kubeconfig file; empty: the in-cluster configuration
	// (the pod's service account).
	Kubeconfig string `yaml:"kubeconfig"`
	// DefaultNetwork is the network of pods whose namespace has no
	// iotfabric.io/network annotation and is not isolated.
	DefaultNetwork string `yaml:"default_network"`
	// IsolationPool is the address range isolated namespaces' networks are
	// cut from, IsolationPrefix the prefix length of each (default 24).
	IsolationPool   string `yaml:"isolation_pool"`
	IsolationPrefix int    `yaml:"isolation_prefix"`
	// NodeGrace is how long after a node is deleted its gateway, endpoints
	// and routes are removed (default 5m).
	NodeGrace time.Duration `yaml:"node_grace"`
	// PodGrace is how long an endpoint whose pod no longer exists is kept
	// before it is released (default 2m).
	PodGrace time.Duration `yaml:"pod_grace"`
	// Lease: leader election among controllers.
	Lease LeaseConfig `yaml:"lease"`
}

// LeaseConfig configures the coordination.k8s.io Lease.
type LeaseConfig struct {
	Namespace string        `yaml:"namespace"` // default kube-system
	Name      string        `yaml:"name"`      // default iotfabric-controller
	Identity  string        `yaml:"identity"`  // default hostname and a random suffix
	Duration  time.Duration `yaml:"duration"`  // default 15s
	Renew     time.Duration `yaml:"renew"`     // default 10s
	Retry     time.Duration `yaml:"retry"`     // default 2s
}

// Defaults returns c with the defaults filled in.
func (c Config) Defaults() Config {
	if c.IsolationPrefix == 0 {
		c.IsolationPrefix = 24
	}
	if c.NodeGrace == 0 {
		c.NodeGrace = 5 * time.Minute
	}
	if c.PodGrace == 0 {
		c.PodGrace = 2 * time.Minute
	}
	l := &c.Lease
	if l.Namespace == "" {
		l.Namespace = "kube-system"
	}
	if l.Name == "" {
		l.Name = "iotfabric-controller"
	}
	if l.Duration == 0 {
		l.Duration = 15 * time.Second
	}
	if l.Renew == 0 {
		l.Renew = l.Duration * 2 / 3
	}
	if l.Retry == 0 {
		l.Retry = l.Duration / 7
	}
	return c
}

// Validate checks the section (defaults applied).
func (c Config) Validate() error {
	if c.IsolationPool != "" {
		p, err := netip.ParsePrefix(c.IsolationPool)
		if err != nil {
			return fmt.Errorf("kubernetes.isolation_pool %q: want a CIDR prefix such as 10.128.0.0/12", c.IsolationPool)
		}
		if c.IsolationPrefix < p.Bits() || c.IsolationPrefix > p.Addr().BitLen() {
			return fmt.Errorf("kubernetes.isolation_prefix %d: want %d-%d for pool %s", c.IsolationPrefix, p.Bits(), p.Addr().BitLen(), p)
		}
	}
	if c.Lease.Renew >= c.Lease.Duration || c.Lease.Retry >= c.Lease.Renew {
		return fmt.Errorf("kubernetes.lease: want retry < renew < duration (have %v, %v, %v)", c.Lease.Retry, c.Lease.Renew, c.Lease.Duration)
	}
	if c.NodeGrace < 0 || c.PodGrace < 0 {
		return fmt.Errorf("kubernetes: node_grace and pod_grace must not be negative")
	}
	return nil
}
