// Package keys is the one list of the controller's store keys: every record,
// index and marker the controller, IPAM and the route table keep in the store
// (pkg/store), with the functions that build them. Every package that reads
// or writes the store asks this package for its keys; nobody else spells a
// prefix out or parses a key.
//
// It owns the key layout only; it may not import anything of iotfabric, so
// that every layer can use it.
package keys

import (
	"net/netip"
	"strconv"
	"strings"
)

// Prefixes. Names (networks, gateways) and endpoint ids never contain '/'.
const (
	// Networks: networks/<name> -> v1.VirtualNetwork.
	Networks = "networks/"
	// NetworkIDs: netids/<id> -> network name (ids are unique).
	NetworkIDs = "netids/"
	// Gateways: gateways/<name> -> v1.Gateway.
	Gateways = "gateways/"
	// Endpoints: endpoints/<id> -> v1.Endpoint.
	Endpoints = "endpoints/"
	// Labels: labels/<gateway>/<label> -> endpoint id (a label is unique per gateway).
	Labels = "labels/"
	// RefNetworks: refs/net/<network>, rewritten by every endpoint write in
	// the network, so that deleting the network can require it unchanged.
	RefNetworks = "refs/net/"
	// RefGateways: refs/gw/<gateway>, the same for a gateway.
	RefGateways = "refs/gw/"
	// EndpointIndex: idx/<network>/<endpoint id> -> gateway name, written in
	// the same transaction as the endpoint, so that a network's endpoints are
	// listed without reading the others.
	EndpointIndex = "idx/"
	// Pending: pending/<gateway>/<endpoint id> -> "" for an endpoint without
	// a label. With Labels, it lists a gateway's endpoints: each has either a
	// label key or a pending key. (A gateway's endpoints are written to keys
	// of their gateway only once, so that an endpoint's write stays as cheap
	// as it was without the index.)
	Pending = "pending/"
	// Streams: streams/<gateway>/<stream> -> "" while a controller streams
	// routes to the gateway's agent. A stream id is <controller instance>-<n>
	// (StreamInstance), so that the markers of a dead controller are known.
	Streams = "streams/"
	// Controllers: controllers/<controller instance> -> the instance's last
	// heartbeat (JSON: time and interval), rewritten every interval while it
	// runs and deleted when it stops cleanly. An instance whose heartbeat is
	// stale, or that has none, is dead: its stream markers are swept.
	Controllers = "controllers/"
	// IPAM: ipam/<network>/blocks/<prefix> -> gateway name (a block lease) and
	// ipam/<network>/addrs/<address> -> owner (an endpoint id).
	IPAM = "ipam/"
	// GatewayBlockIndex: gwblocks/<gateway>/<network>/<prefix> -> "", written
	// with every block lease, so that a gateway's blocks are found without
	// reading every network's. Entries of blocks dropped since (a subnet or
	// network removed) may remain: readers check the block key.
	GatewayBlockIndex = "gwblocks/"
	// Peers: bgp/peers/<address> -> JSON of a BGP peer added through the API.
	Peers = "bgp/peers/"
	// Meta: meta/<name> -> markers of the store's layout version.
	Meta = "meta/"
	// Tokens: enroll/tokens/<token id> -> JSON of a one-time bootstrap token
	// (its secret's SHA-256, what it enrolls, when it expires); deleted when
	// used.
	Tokens = "enroll/tokens/"
	// Certs: enroll/certs/<identity>/<serial> -> JSON of a certificate the
	// controller's CA issued (serial in hex; identity gateway:<name>,
	// admin:<name> or viewer:<name>).
	Certs = "enroll/certs/"
	// Revoked: enroll/revoked/<serial> -> JSON of a revoked certificate
	// (identity, when); every controller refuses these serials.
	Revoked = "enroll/revoked/"
)

// Network is a network's record.
func Network(name string) string { return Networks + name }

// NetworkID is the key that reserves a network id.
func NetworkID(id uint32) string { return NetworkIDs + strconv.FormatUint(uint64(id), 10) }

// Gateway is a gateway's record.
func Gateway(name string) string { return Gateways + name }

// Endpoint is an endpoint's record.
func Endpoint(id string) string { return Endpoints + id }

// Label is the key that reserves an MPLS label on a gateway.
func Label(gateway string, label uint32) string {
	return GatewayLabels(gateway) + strconv.FormatUint(uint64(label), 10)
}

// RefNetwork is the network's reference key.
func RefNetwork(network string) string { return RefNetworks + network }

// RefGateway is the gateway's reference key.
func RefGateway(gateway string) string { return RefGateways + gateway }

// NetworkEndpoints is the index prefix of a network's endpoints.
func NetworkEndpoints(network string) string { return EndpointIndex + network + "/" }

// EndpointIndexKey is an endpoint's key in its network's index.
func EndpointIndexKey(network, id string) string { return NetworkEndpoints(network) + id }

// GatewayLabels is the prefix of the labels of a gateway's endpoints.
func GatewayLabels(gateway string) string { return Labels + gateway + "/" }

// GatewayPending is the prefix of a gateway's endpoints without a label.
func GatewayPending(gateway string) string { return Pending + gateway + "/" }

// PendingEndpoint marks an endpoint of gateway without a label.
func PendingEndpoint(gateway, id string) string { return GatewayPending(gateway) + id }

// GatewayStreams is the prefix of the markers of a gateway's route streams.
func GatewayStreams(gateway string) string { return Streams + gateway + "/" }

// GatewayStream marks that controller instance id streams routes to gateway.
func GatewayStream(gateway, id string) string { return GatewayStreams(gateway) + id }

// StreamGateway returns the gateway and the stream id of a stream marker key
// (ok false for another key).
func StreamGateway(key string) (gateway, stream string, ok bool) {
	rest, ok := strings.CutPrefix(key, Streams)
	if !ok {
		return "", "", false
	}
	gateway, stream, ok = strings.Cut(rest, "/")
	return gateway, stream, ok && gateway != "" && stream != ""
}

// StreamID is the id of a controller instance's n-th route stream; StreamInstance
// reads the instance back.
func StreamID(instance string, n uint64) string {
	return instance + "-" + strconv.FormatUint(n, 10)
}

// StreamInstance returns the controller instance of a stream id
// (<instance>-<n>; an id without a numeric suffix is the instance itself).
func StreamInstance(stream string) string {
	i := strings.LastIndexByte(stream, '-')
	if i <= 0 || i == len(stream)-1 {
		return stream
	}
	if _, err := strconv.ParseUint(stream[i+1:], 10, 64); err != nil {
		return stream
	}
	return stream[:i]
}

// Controller is a controller instance's liveness key.
func Controller(instance string) string { return Controllers + instance }

// ControllerInstance returns the instance of a liveness key.
func ControllerInstance(key string) string { return strings.TrimPrefix(key, Controllers) }

// IPAMNetwork is the prefix of a network's IPAM state.
func IPAMNetwork(network string) string { return IPAM + network + "/" }

// IPAMBlocks is the prefix of a network's block leases.
func IPAMBlocks(network string) string { return IPAMNetwork(network) + "blocks/" }

// IPAMBlock is the lease of one block.
func IPAMBlock(network string, p netip.Prefix) string { return IPAMBlocks(network) + p.String() }

// IPAMAddrs is the prefix of a network's allocated addresses.
func IPAMAddrs(network string) string { return IPAMNetwork(network) + "addrs/" }

// IPAMAddr is the allocation of one address.
func IPAMAddr(network string, a netip.Addr) string { return IPAMAddrs(network) + a.String() }

// BlockOf parses an IPAMBlock key.
func BlockOf(key string) (network string, p netip.Prefix, ok bool) {
	rest, found := strings.CutPrefix(key, IPAM)
	if !found {
		return "", netip.Prefix{}, false
	}
	network, pfx, found := strings.Cut(rest, "/blocks/")
	if !found || strings.Contains(network, "/") {
		return "", netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(pfx)
	return network, p, err == nil
}

// GatewayBlocks is the prefix of a gateway's block index.
func GatewayBlocks(gateway string) string { return GatewayBlockIndex + gateway + "/" }

// GatewayBlock is the index key of gateway's block p of network.
func GatewayBlock(gateway, network string, p netip.Prefix) string {
	return GatewayBlocks(gateway) + network + "/" + p.String()
}

// GatewayBlockOf parses a GatewayBlock key of gateway.
func GatewayBlockOf(gateway, key string) (network string, p netip.Prefix, ok bool) {
	rest, found := strings.CutPrefix(key, GatewayBlocks(gateway))
	if !found {
		return "", netip.Prefix{}, false
	}
	network, pfx, found := strings.Cut(rest, "/")
	if !found {
		return "", netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(pfx)
	return network, p, err == nil
}

// GatewayBlockIndexOf parses a GatewayBlock key of any gateway.
func GatewayBlockIndexOf(key string) (gateway, network string, p netip.Prefix, ok bool) {
	rest, found := strings.CutPrefix(key, GatewayBlockIndex)
	if !found {
		return "", "", netip.Prefix{}, false
	}
	gateway, _, found = strings.Cut(rest, "/")
	if !found || gateway == "" {
		return "", "", netip.Prefix{}, false
	}
	network, p, ok = GatewayBlockOf(gateway, key)
	return gateway, network, p, ok
}

// Peer is the key of a BGP peer added through the API.
func Peer(a netip.Addr) string { return Peers + a.String() }

// Token is a bootstrap token's record.
func Token(id string) string { return Tokens + id }

// IdentityCerts is the prefix of the certificates issued to an identity.
func IdentityCerts(identity string) string { return Certs + identity + "/" }

// Cert is the record of a certificate issued to identity.
func Cert(identity, serial string) string { return IdentityCerts(identity) + serial }

// RevokedCert is a revoked certificate's record.
func RevokedCert(serial string) string { return Revoked + serial }

// RevokedSerial returns the serial of a revoked certificate's key.
func RevokedSerial(key string) string { return strings.TrimPrefix(key, Revoked) }

// IndexVersion records which endpoint indexes the store holds.
const IndexVersion = Meta + "index-version"
