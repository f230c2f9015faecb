package rest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// item is what a watch's reader hands its writer: one event's JSON, or the
// error that ended the stream.
type item struct {
	data []byte
	id   int64 // the event's revision (0: none)
	err  error
}

// watch serves a watch RPC as server-sent events: the query parameters
// (and a Last-Event-ID header, for from_revision) make the request; each
// event is a "data:" line with its JSON (and an "id:" line with its
// revision), a comment line every Heartbeat, and an "event: error" with the
// error JSON when the stream fails. It ends when the client goes, when the
// client falls more than StreamBuffer events (or StreamBufferBytes) behind,
// and when the handler closes.
func watch[Q proto.Message, E any, PE interface {
	*E
	proto.Message
}](h *Handler, newReq func() Q, open func(context.Context, Q, ...grpc.CallOption) (grpc.ServerStreamingClient[E], error), revision func(PE) int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case h.streams <- struct{}{}:
			defer func() { <-h.streams }()
		default:
			w.Header().Set("Retry-After", "10")
			writeError(w, status.Errorf(codes.ResourceExhausted, "%d watches are open on this listener, its limit (api.http_max_streams); retry later", cap(h.streams)))
			return
		}
		req := newReq()
		if err := runtime.PopulateQueryParameters(req, r.URL.Query(), utilities.NewDoubleArray(nil)); err != nil {
			writeError(w, status.Errorf(codes.InvalidArgument, "%v", err))
			return
		}
		if err := resumeFrom(req, r); err != nil {
			writeError(w, err)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(h.ctx, cancel)
		defer stop()
		stream, err := open(ctx, req)
		if err != nil {
			writeError(w, err)
			return
		}
		if md, _ := stream.Header(); len(md.Get(openMD)) == 0 {
			_, err := stream.Recv() // refused before it opened: the status
			if err == nil {
				err = status.Error(codes.Internal, "watch sent an event before it opened")
			}
			writeError(w, err)
			return
		}
		items := make(chan item, h.opts.StreamBuffer)
		var buffered atomic.Int64
		go func() {
			for {
				ev, err := stream.Recv()
				var it item
				if err == nil {
					it.data, err = marshaler.Marshal(PE(ev))
					if revision != nil {
						it.id = revision(PE(ev))
					}
				}
				if err != nil {
					select {
					case items <- item{err: err}:
					case <-ctx.Done():
					}
					return
				}
				if buffered.Add(int64(len(it.data))) > int64(h.opts.StreamBufferBytes) {
					h.slow(ctx, cancel, r)
					return
				}
				select {
				case items <- it:
				default:
					h.slow(ctx, cancel, r)
					return
				}
			}
		}()

		hd := w.Header()
		hd.Set("Content-Type", "text/event-stream")
		hd.Set("Cache-Control", "no-cache")
		hd.Set("X-Accel-Buffering", "no")
		rc := http.NewResponseController(w)
		// The server's read timeout bounds reading the request, never the
		// watch (the connection's reads only notice a client going away).
		rc.SetReadDeadline(time.Time{})
		w.WriteHeader(http.StatusOK)
		write := func(b []byte) bool {
			rc.SetWriteDeadline(time.Now().Add(WriteTimeout))
			if _, err := w.Write(b); err != nil {
				return false
			}
			return rc.Flush() == nil
		}
		if !write([]byte(": open\n\n")) {
			return
		}
		tick := time.NewTicker(h.opts.Heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if !write([]byte(": heartbeat\n\n")) {
					return
				}
			case it := <-items:
				if it.err != nil {
					if ctx.Err() == nil {
						b, _ := marshalError(it.err)
						write(append(append([]byte("event: error\ndata: "), b...), "\n\n"...))
					}
					return
				}
				buffered.Add(-int64(len(it.data)))
				var b []byte
				if it.id != 0 {
					b = append(append(append(b, "id: "...), strconv.FormatInt(it.id, 10)...), '\n')
				}
				b = append(append(append(b, "data: "...), it.data...), "\n\n"...)
				if !write(b) {
					return
				}
			}
		}
	})
}

// slow cuts off a client that fell too far behind.
func (h *Handler) slow(ctx context.Context, cancel context.CancelFunc, r *http.Request) {
	if ctx.Err() != nil {
		return
	}
	h.log.Warn("watch client too slow: cut off", logkey.Object, r.URL.Path, logkey.Addr, r.RemoteAddr,
		logkey.Limit, h.opts.StreamBuffer)
	cancel()
}

// resumeFrom sets a watch request's from_revision from a Last-Event-ID
// header (an EventSource reconnecting), unless the query sets it.
func resumeFrom(req proto.Message, r *http.Request) error {
	last := r.Header.Get("Last-Event-ID")
	q := r.URL.Query()
	if last == "" || q.Has("from_revision") || q.Has("fromRevision") {
		return nil
	}
	f := req.ProtoReflect().Descriptor().Fields().ByName("from_revision")
	if f == nil {
		return nil
	}
	n, err := strconv.ParseInt(last, 10, 64)
	if err != nil || n < 0 {
		return status.Errorf(codes.InvalidArgument, "Last-Event-ID %q: want a revision", last)
	}
	req.ProtoReflect().Set(f, protoreflect.ValueOfInt64(n))
	return nil
}

// marshalError is the error JSON of err.
func marshalError(err error) ([]byte, error) {
	if errors.Is(err, context.Canceled) {
		err = status.Error(codes.Canceled, "watch ended")
	}
	return json.Marshal(errorOf(err))
}
