package controller

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Page asks for one page of a listing: at most Size records after the store
// key After ("" for the first page). A page is a range scan of the store
// from After: a listing costs what its pages return, never the whole prefix
// at once.
type Page struct {
	After string
	Size  int
}

// PageResult is what a page returned besides its records: the store revision
// the page is consistent with and Next, the key to pass as After for the next
// page ("" when the listing is complete). Records created or deleted while a
// listing is paged through may or may not be listed; the others are listed
// once.
type PageResult struct {
	Next     string
	Revision int64
}

// scanBudget bounds how many index keys one filtered page reads, in pages'
// worth: a page of a sparse filter may come back short (with a Next) rather
// than read a whole network.
const scanBudget = 8

func (p Page) check(prefixes ...string) error {
	if p.Size <= 0 {
		return model.Errorf(model.ErrInvalid, "page size %d is not positive", p.Size)
	}
	if p.After == "" {
		return nil
	}
	for _, pre := range prefixes {
		if strings.HasPrefix(p.After, pre) {
			return nil
		}
	}
	return model.Errorf(model.ErrInvalid, "the page token does not belong to this listing")
}

// ListNetworksPage returns one page of the networks, in name order.
func (c *Controller) ListNetworksPage(ctx context.Context, p Page) ([]*v1.VirtualNetwork, PageResult, error) {
	return pageDecoded(ctx, c.st, keys.Networks, p, func() *v1.VirtualNetwork { return &v1.VirtualNetwork{} },
		func(n *v1.VirtualNetwork, rev int64) { n.Revision = rev })
}

// ListGatewaysPage returns one page of the gateways, in name order.
func (c *Controller) ListGatewaysPage(ctx context.Context, p Page) ([]*v1.Gateway, PageResult, error) {
	return pageDecoded(ctx, c.st, keys.Gateways, p, func() *v1.Gateway { return &v1.Gateway{} },
		func(g *v1.Gateway, rev int64) { g.Revision = rev })
}

func pageDecoded[T proto.Message](ctx context.Context, st store.Store, prefix string, p Page, mk func() T, setRev func(T, int64)) ([]T, PageResult, error) {
	if err := p.check(prefix); err != nil {
		return nil, PageResult{}, err
	}
	kvs, rev, more, err := st.ListPage(ctx, prefix, p.After, p.Size)
	if err != nil {
		return nil, PageResult{}, storeErr(err)
	}
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		m, err := decode(kv, mk())
		if err != nil {
			return nil, PageResult{}, model.Errorf(model.ErrCorrupt, "%w", err)
		}
		setRev(m, kv.ModRev)
		out = append(out, m)
	}
	res := PageResult{Revision: rev}
	if more && len(kvs) > 0 {
		res.Next = kvs[len(kvs)-1].Key
	}
	return out, res, nil
}

// ListEndpointsPage returns one page of the endpoints, optionally only those
// of a network and/or a gateway. Unfiltered, the page is a range of the
// endpoint records in id order; by network, a range of the network's index
// in id order; by gateway, a range of the gateway's labels (in label order),
// then of its endpoints without a label (in id order). A filtered page reads
// at most a few pages' worth of index keys, so it may hold fewer than Size
// endpoints and still have a Next.
func (c *Controller) ListEndpointsPage(ctx context.Context, network, gateway string, p Page) ([]*v1.Endpoint, PageResult, error) {
	if network == "" && gateway == "" {
		return pageDecoded(ctx, c.st, keys.Endpoints, p, func() *v1.Endpoint { return &v1.Endpoint{} },
			func(e *v1.Endpoint, r int64) { e.Revision = r })
	}
	keyID := func(kv store.KV) string { return kv.Key[strings.LastIndexByte(kv.Key, '/')+1:] }
	var prefixes []string
	var id func(store.KV) string
	switch {
	case network != "" && gateway != "":
		// The index's values are the gateways: read only the matching endpoints.
		prefixes = []string{keys.NetworkEndpoints(network)}
		id = func(kv store.KV) string {
			if string(kv.Value) != gateway {
				return ""
			}
			return keyID(kv)
		}
	case network != "":
		prefixes, id = []string{keys.NetworkEndpoints(network)}, keyID
	default:
		prefixes = []string{keys.GatewayLabels(gateway), keys.GatewayPending(gateway)}
		id = func(kv store.KV) string {
			if strings.HasPrefix(kv.Key, keys.Labels) {
				return string(kv.Value)
			}
			return keyID(kv)
		}
	}
	if err := p.check(prefixes...); err != nil {
		return nil, PageResult{}, err
	}
	// Skip the prefixes the token has gone past.
	for len(prefixes) > 1 && p.After != "" && !strings.HasPrefix(p.After, prefixes[0]) {
		prefixes = prefixes[1:]
	}
	ids, res, err := c.scanIndex(ctx, prefixes, p, id)
	if err != nil {
		return nil, PageResult{}, err
	}
	eps, err := c.getEndpoints(ctx, ids)
	if err != nil {
		return nil, PageResult{}, err
	}
	out := eps[:0]
	for _, e := range eps {
		if (network == "" || e.Network == network) && (gateway == "" || e.Gateway == gateway) {
			out = append(out, e)
		}
	}
	return out, res, nil
}

// scanIndex reads index keys of prefixes, in turn, after p.After, until it
// has p.Size ids or has read scanBudget pages' worth of keys.
func (c *Controller) scanIndex(ctx context.Context, prefixes []string, p Page, id func(store.KV) string) ([]string, PageResult, error) {
	var ids []string
	var res PageResult
	after, budget := p.After, scanBudget*p.Size
	for i := 0; i < len(prefixes); {
		pre := prefixes[i]
		if !strings.HasPrefix(after, pre) {
			after = ""
		}
		kvs, rev, more, err := c.st.ListPage(ctx, pre, after, min(p.Size-len(ids), budget))
		if err != nil {
			return nil, PageResult{}, storeErr(err)
		}
		// The listing's revision is its first read's: a watch from it brings
		// what changed between the reads (an endpoint labelled between
		// the reads of its gateway's labels and pending keys is in neither).
		if res.Revision == 0 {
			res.Revision = rev
		}
		budget -= len(kvs)
		for _, kv := range kvs {
			if id := id(kv); id != "" {
				ids = append(ids, id)
			}
		}
		if len(kvs) > 0 {
			after = kvs[len(kvs)-1].Key
		}
		if !more {
			i++
			after = ""
		}
		if len(ids) >= p.Size || budget <= 0 {
			if more || i < len(prefixes) {
				res.Next = after
				if res.Next == "" { // this prefix is done: resume at the next one
					res.Next = prefixes[i]
				}
			}
			break
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), res, nil // an endpoint relabelled meanwhile may be listed twice
}
