package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/iotfabric/iotfabric/pkg/cni"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// File names under the state directory.
const (
	stateFile  = "endpoints.json" // endpoints, labels, blocks, tables, offline log
	routesFile = "routes.json"    // older versions' routes per controller (read once, then routes.log)
)

// Block is an address block leased to this gateway.
type Block struct {
	Network string       `json:"network"`
	Prefix  netip.Prefix `json:"prefix"`
}

// NetInfo is what the agent knows of a network's address space (from the
// controller), so that its ipam.Pool matches the controller's.
type NetInfo struct {
	Subnets []netip.Prefix `json:"subnets"`
	BlockV4 int            `json:"blockV4,omitempty"`
	BlockV6 int            `json:"blockV6,omitempty"`
}

// Endpoint is a local endpoint as the agent persists it.
type Endpoint struct {
	cni.Endpoint
	Created time.Time `json:"created"`
	// rev is the core's change counter when the endpoint last changed.
	rev uint64
}

// persisted is the content of stateFile.
type persisted struct {
	Version    int                `json:"version"`
	Gateway    string             `json:"gateway"`
	NextLabel  uint32             `json:"nextLabel"`
	Endpoints  []*Endpoint        `json:"endpoints"`
	Blocks     []Block            `json:"blocks"`
	Networks   map[string]NetInfo `json:"networks"`
	Tables     map[string]uint32  `json:"tables"`
	OfflineLog []string           `json:"offlineLog,omitempty"`
}

// persistedRoutes is the content of routesFile.
type persistedRoutes struct {
	Controllers map[string]persistedSession `json:"controllers"`
}

type persistedSession struct {
	ControllerID string            `json:"controllerID"`
	Revision     int64             `json:"revision"`
	Routes       []json.RawMessage `json:"routes"`
}

func loadState(dir string) (*persisted, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if os.IsNotExist(err) {
		return &persisted{Version: 1, Tables: map[string]uint32{}, Networks: map[string]NetInfo{}}, nil
	}
	if err != nil {
		return nil, err
	}
	var p persisted
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFile, err)
	}
	if p.Tables == nil {
		p.Tables = map[string]uint32{}
	}
	if p.Networks == nil {
		p.Networks = map[string]NetInfo{}
	}
	return &p, nil
}

func loadRoutes(dir string) (map[string]*sessionRoutes, error) {
	out := map[string]*sessionRoutes{}
	data, err := os.ReadFile(filepath.Join(dir, routesFile))
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	var p persistedRoutes
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", routesFile, err)
	}
	for addr, s := range p.Controllers {
		sr := &sessionRoutes{controllerID: s.ControllerID, revision: s.Revision, routes: map[routeKey]*route{}}
		for _, raw := range s.Routes {
			r := &v1.Route{}
			if err := protojson.Unmarshal(raw, r); err != nil {
				return nil, fmt.Errorf("%s: %w", routesFile, err)
			}
			k, nr, err := newRoute(r)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", routesFile, err)
			}
			sr.routes[k] = nr
		}
		out[addr] = sr
	}
	return out, nil
}
