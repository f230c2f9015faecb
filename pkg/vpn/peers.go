package vpn

import (
	"encoding/json"
	"fmt"

	"github.com/iotfabric/iotfabric/pkg/bgp"
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
