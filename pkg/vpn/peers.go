package vpn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	storekeys "github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
)

// EncodePeer is the stored form of a peer added through the API.
func EncodePeer(p bgp.PeerConfig) []byte {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return b
}

// DecodePeer is the inverse of EncodePeer.
func DecodePeer(b []byte) (bgp.PeerConfig, error) {
	var p bgp.PeerConfig
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("decode peer: %w", err)
	}
	return p, p.Validate()
}

// Peers are the BGP neighbours: those of the configuration file, and those
// added through the API, which are kept in the store (storekeys.Peers) so that
// every controller sharing it peers with them and a restart keeps them. The
// Runner follows the store and configures its speaker.
type Peers struct {
	st     store.Store
	r      *Runner
	config []bgp.PeerConfig
}

// NewPeers returns the peers of r; config are the peers of the configuration
// file (they cannot be changed through the API).
func NewPeers(st store.Store, r *Runner, config []bgp.PeerConfig) *Peers {
	return &Peers{st: st, r: r, config: config}
}

// PeerInfo is a peer's state and where it was configured.
type PeerInfo struct {
	bgp.PeerStatus
	FromConfig bool // the configuration file's, not the API's
}

var errDisabled = model.Errorf(model.ErrConflict, "the BGP speaker is disabled on this controller: set bgp.router_id in its configuration")

// Available returns an ErrConflict error when this controller runs no BGP speaker.
func (p *Peers) Available() error {
	if !p.r.HasSpeaker() {
		return errDisabled
	}
	return nil
}

func (p *Peers) isConfig(a netip.Addr) bool {
	return slices.ContainsFunc(p.config, func(c bgp.PeerConfig) bool { return c.Address == a })
}

// Add stores a peer (the speakers of every controller then connect to it).
func (p *Peers) Add(ctx context.Context, pc bgp.PeerConfig) (bgp.PeerConfig, error) {
	if !p.r.HasSpeaker() {
		return pc, errDisabled
	}
	pc.Address = pc.Address.Unmap()
	if err := pc.Validate(); err != nil {
		return pc, model.Errorf(model.ErrInvalid, "peer %s: %w", pc.Address, err)
	}
	if p.isConfig(pc.Address) {
		return pc, model.Errorf(model.ErrConflict, "peer %s is configured in the controller's configuration file; change it there", pc.Address)
	}
	if _, err := p.st.Txn(ctx, nil, []store.Op{store.Put(storekeys.Peer(pc.Address), EncodePeer(pc))}); err != nil {
		return pc, storeErr(err)
	}
	return pc, nil
}

// Delete removes a peer added through the API and returns the store revision.
func (p *Peers) Delete(ctx context.Context, addr netip.Addr) (int64, error) {
	if !p.r.HasSpeaker() {
		return 0, errDisabled
	}
	if p.isConfig(addr) {
		return 0, model.Errorf(model.ErrConflict, "peer %s is configured in the controller's configuration file; remove it there", addr)
	}
	key := storekeys.Peer(addr.Unmap())
	kv, err := p.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return 0, model.Errorf(model.ErrNotFound, "peer %s not found", addr)
	}
	if err != nil {
		return 0, storeErr(err)
	}
	rev, err := p.st.Txn(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Delete(key)})
	if errors.Is(err, store.ErrConflict) {
		return 0, model.Errorf(model.ErrAborted, "peer %s changed meanwhile; try again", addr)
	}
	if err != nil {
		return 0, storeErr(err)
	}
	return rev, nil
}

// List returns the speaker's peers.
func (p *Peers) List(ctx context.Context) ([]PeerInfo, error) {
	if !p.r.HasSpeaker() {
		return nil, errDisabled
	}
	ps, err := p.r.Peers(ctx)
	if err != nil {
		return nil, model.Errorf(model.ErrUnavailable, "BGP speaker: %w", err)
	}
	out := make([]PeerInfo, len(ps))
	for i, s := range ps {
		out[i] = PeerInfo{PeerStatus: s, FromConfig: p.isConfig(s.Address)}
	}
	return out, nil
}

// storeErr marks a store failure; context errors pass unchanged.
func storeErr(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return model.Errorf(model.ErrUnavailable, "store: %w", err)
}
