package api

import (
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// MaxRouteMessage is the largest GatewayRoutes message the controller sends
// (1 MiB): an update larger than that, or than the agent's
// max_message_bytes, goes in chunks.
const MaxRouteMessage = 1 << 20

// minRouteMessage is the smallest chunk size honoured (an agent asking for
// less gets chunks of this size).
const minRouteMessage = 16 << 10

// chunkOverhead is what a message's fields other than routes and scopes
// take at most (kind, revision, controller id, more).
const chunkOverhead = 128

// sendChunks sends one update of a gateway's route stream as messages of at
// most limit bytes (whole when chunked is false: an agent that takes no
// chunks). Every message has the update's kind and revision; all but the
// last have more set.
func sendChunks(out grpc.ServerStreamingServer[v1.GatewayRoutes], u vpn.GatewayUpdate, controllerID string, limit int, chunked bool) error {
	kind := v1.GatewayRoutes_KIND_CHANGES
	if u.Snapshot {
		kind = v1.GatewayRoutes_KIND_SNAPSHOT
	}
	newMsg := func() *v1.GatewayRoutes {
		return &v1.GatewayRoutes{Kind: kind, Revision: u.Revision, ControllerId: controllerID}
	}
	msg, size := newMsg(), chunkOverhead
	flush := func(more bool) error {
		msg.More = more
		err := out.Send(msg)
		msg, size = newMsg(), chunkOverhead
		return err
	}
	// room makes room for an item of n bytes (its field tag and length
	// prefix included), sending the message when it is full.
	room := func(n int) error {
		n += 1 + protowireSize(n)
		if chunked && size+n > limit && size > chunkOverhead {
			if err := flush(true); err != nil {
				return err
			}
		}
		size += n
		return nil
	}
	for _, sc := range u.Keep {
		s := &v1.RouteScope{Network: sc.Network, BucketCount: uint32(sc.BucketCount)}
		for _, b := range sc.Buckets {
			s.Buckets = append(s.Buckets, uint32(b))
		}
		if err := room(proto.Size(s)); err != nil {
			return err
		}
		msg.Keep = append(msg.Keep, s)
	}
	for _, r := range u.Delete {
		if err := room(proto.Size(r)); err != nil {
			return err
		}
		msg.Delete = append(msg.Delete, r)
	}
	for _, r := range u.Put {
		if err := room(proto.Size(r)); err != nil {
			return err
		}
		msg.Put = append(msg.Put, r)
	}
	return flush(false)
}

func protowireSize(n int) int {
	s := 1
	for n >= 0x80 {
		n >>= 7
		s++
	}
	return s
}

// DefaultMaxFullSyncs is how many gateway full syncs a controller serves at
// once by default.
const DefaultMaxFullSyncs = 64

// fullSyncRetry is the base of the retry delay a refused full sync is
// given: between it and twice it (the agent adds its own jitter).
const fullSyncRetry = 2 * time.Second

// admission bounds the full syncs served at once.
type admission struct{ slots chan struct{} }

func newAdmission(n int) *admission { return &admission{slots: make(chan struct{}, n)} }

// acquire takes a slot, or refuses at once with a retry delay.
func (a *admission) acquire() (release func(), err error) {
	select {
	case a.slots <- struct{}{}:
		var done bool
		return func() {
			if !done {
				done = true
				<-a.slots
			}
		}, nil
	default:
		d := fullSyncRetry + rand.N(fullSyncRetry)
		return nil, model.Busy(d, "the controller serves %d gateway full syncs already; retry in %s", cap(a.slots), d.Round(time.Millisecond))
	}
}
