package console

import (
	"context"
	"net/http"
	"time"

	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/rest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// The methods the summary stands for: a caller must be allowed all of them.
const (
	methodListNetworks  = "/iotfabric.v1.NetworkService/ListNetworks"
	methodListGateways  = "/iotfabric.v1.GatewayService/ListGateways"
	methodListEndpoints = "/iotfabric.v1.EndpointService/ListEndpoints"
	methodListPeers     = "/iotfabric.v1.PeerService/ListPeers"
)

// summaryPage is the page size the summary lists with (the API's largest).
const summaryPage = 5000

// summaryTimeout bounds one summary.
const summaryTimeout = 10 * time.Second

// Summary is what /ui/api/summary returns: counts, so that the overview
// draws without downloading every endpoint.
type Summary struct {
	Networks int `json:"networks"`
	// Gateways by state (REGISTERED, UP, DOWN, UNSPECIFIED as the enum's
	// short names: registered, up, down, unspecified).
	Gateways       int            `json:"gateways"`
	GatewayStates  map[string]int `json:"gatewayStates"`
	Endpoints      int            `json:"endpoints"`
	EndpointStates map[string]int `json:"endpointStates"`
	// Endpoints per network and per gateway.
	NetworkEndpoints map[string]int `json:"networkEndpoints"`
	GatewayEndpoints map[string]int `json:"gatewayEndpoints"`
	Peers            int            `json:"peers"`
	PeersUp          int            `json:"peersEstablished"`
	// PeersError says why the peers are not counted (e.g. no BGP speaker runs).
	PeersError string `json:"peersError,omitempty"`
	// Revision of the endpoint listing: watch endpoints from it.
	EndpointRevision int64 `json:"endpointRevision,string"`
}

func (h *Handler) summary(w http.ResponseWriter, r *http.Request) {
	methods := []string{methodListNetworks, methodListGateways, methodListEndpoints}
	if h.opts.Peers != nil {
		methods = append(methods, methodListPeers)
	}
	var ctx context.Context
	for _, m := range methods {
		c, err := h.opts.Authorize(r, m)
		if err != nil {
			writeError(w, err)
			return
		}
		ctx = c
	}
	ctx, cancel := context.WithTimeout(ctx, summaryTimeout)
	defer cancel()
	s, err := h.count(ctx)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// count returns the counts. The store's counts are kept until the store's
// revision moves (summaries are asked for together, by every page that
// opens or sees a change); the peers' are counted every time.
func (h *Handler) count(ctx context.Context) (*Summary, error) {
	h.sumMu.Lock()
	defer h.sumMu.Unlock()
	first, err := h.opts.Lister.ListNetworks(ctx, &v1.ListNetworksRequest{PageSize: summaryPage})
	if err != nil {
		return nil, err
	}
	if h.sum == nil || first.Revision == 0 || first.Revision != h.sumRev {
		s, err := h.countStore(ctx, first)
		if err != nil {
			return nil, err
		}
		h.sum, h.sumRev = s, first.Revision
	}
	s := *h.sum
	if h.opts.Peers == nil {
		return &s, nil
	}
	for tok := ""; ; {
		resp, err := h.opts.Peers.ListPeers(ctx, &v1.ListPeersRequest{PageSize: summaryPage, PageToken: tok})
		if err != nil {
			s.Peers, s.PeersUp, s.PeersError = 0, 0, status.Convert(err).Message()
			return &s, nil
		}
		s.Peers += len(resp.Peers)
		for _, p := range resp.Peers {
			if p.State == "established" {
				s.PeersUp++
			}
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
	}
	return &s, nil
}

// countStore lists the store's objects page by page and counts them; first
// is the first page of networks.
func (h *Handler) countStore(ctx context.Context, first *v1.ListNetworksResponse) (*Summary, error) {
	s := &Summary{GatewayStates: map[string]int{}, EndpointStates: map[string]int{}, NetworkEndpoints: map[string]int{}, GatewayEndpoints: map[string]int{}}
	l := h.opts.Lister
	for resp := first; ; {
		s.Networks += len(resp.Networks)
		for _, n := range resp.Networks {
			s.NetworkEndpoints[n.Name] += 0
		}
		if resp.NextPageToken == "" {
			break
		}
		var err error
		if resp, err = l.ListNetworks(ctx, &v1.ListNetworksRequest{PageSize: summaryPage, PageToken: resp.NextPageToken}); err != nil {
			return nil, err
		}
	}
	for tok := ""; ; {
		resp, err := l.ListGateways(ctx, &v1.ListGatewaysRequest{PageSize: summaryPage, PageToken: tok})
		if err != nil {
			return nil, err
		}
		s.Gateways += len(resp.Gateways)
		for _, g := range resp.Gateways {
			s.GatewayStates[shortEnum(g.State.String(), "GATEWAY_STATE_")]++
			s.GatewayEndpoints[g.Name] += 0
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
	}
	for tok := ""; ; {
		resp, err := l.ListEndpoints(ctx, &v1.ListEndpointsRequest{PageSize: summaryPage, PageToken: tok})
		if err != nil {
			return nil, err
		}
		if tok == "" {
			s.EndpointRevision = resp.Revision
		}
		s.Endpoints += len(resp.Endpoints)
		for _, e := range resp.Endpoints {
			s.EndpointStates[shortEnum(e.State.String(), "ENDPOINT_STATE_")]++
			s.NetworkEndpoints[e.Network]++
			s.GatewayEndpoints[e.Gateway]++
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
	}
	return s, nil
}

// shortEnum is an enum value's name without its prefix, in lower case.
func shortEnum(name, prefix string) string {
	b := []byte(name[min(len(prefix), len(name)):])
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// writeError writes err as the REST API's error body (pkg/rest's, with its
// canonical code name and HTTP status).
func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Cache-Control", "no-store")
	rest.WriteError(w, err)
}
