package kubelite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// Informer keeps a cache of one kind of object: it lists them (in pages),
// then watches from the list's resource version with bookmarks, lists
// again when the API server answers 410 Gone (the version expired), and
// retries anything else with a bounded backoff with jitter. One goroutine
// (Run) owns the watch; readers see the cache through Get.
type Informer[T Object] struct {
	c        *Client
	resource string
	selector string
	log      *slog.Logger

	mu     sync.RWMutex
	items  map[string]T
	synced bool
	err    error

	changed chan struct{}
	lists   atomic.Int64
	expired atomic.Int64
}

// InformerOptions tune an Informer.
type InformerOptions struct {
	// FieldSelector limits the objects (e.g. spec.nodeName=NODE).
	FieldSelector string
	Logger        *slog.Logger
}

// NewPodInformer caches the pods of every namespace that match the options.
func NewPodInformer(c *Client, o InformerOptions) *Informer[*Pod] {
	return newInformer[*Pod](c, "pods", o)
}

// NewNamespaceInformer caches the namespaces.
func NewNamespaceInformer(c *Client, o InformerOptions) *Informer[*Namespace] {
	return newInformer[*Namespace](c, "namespaces", o)
}

func newInformer[T Object](c *Client, resource string, o InformerOptions) *Informer[T] {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Informer[T]{c: c, resource: resource, selector: o.FieldSelector, log: log,
		items: map[string]T{}, changed: make(chan struct{}, 1)}
}

// Get returns the cached object of key (namespace/name, or name for a
// cluster-scoped object). The object is shared: read it, never change it.
func (inf *Informer[T]) Get(key string) (T, bool) {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	o, ok := inf.items[key]
	return o, ok
}

// Len is the number of cached objects.
func (inf *Informer[T]) Len() int {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	return len(inf.items)
}

// Synced reports whether the first list is in the cache.
func (inf *Informer[T]) Synced() bool {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	return inf.synced
}

// Err is the error of the last list or watch (nil once one succeeds).
func (inf *Informer[T]) Err() error {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	return inf.err
}

// Changed is signalled (without blocking, coalesced) after each change of
// the cache.
func (inf *Informer[T]) Changed() <-chan struct{} { return inf.changed }

// Lists is how many times the informer listed (successfully or not);
// Expired how many times the API server answered that its resource version
// had expired.
func (inf *Informer[T]) Lists() int64   { return inf.lists.Load() }
func (inf *Informer[T]) Expired() int64 { return inf.expired.Load() }

// Backoff between failed lists or watches: doubling from backoffMin to
// backoffMax, each wait drawn from its upper half.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
)

// listPageSize is the number of objects per page of a list.
const listPageSize = 500

// Run lists and watches until ctx ends.
func (inf *Informer[T]) Run(ctx context.Context) error {
	var (
		rv      string // "" lists
		backoff time.Duration
	)
	wait := func(err error) bool {
		backoff = min(max(2*backoff, backoffMin), backoffMax)
		d := backoff/2 + rand.N(backoff/2+1)
		inf.setErr(err)
		inf.log.Warn("kubernetes "+inf.resource+": retrying", logkey.Err, err, logkey.RetryIn, d)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		if rv == "" {
			r, err := inf.list(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				if !wait(err) {
					return nil
				}
				continue
			}
			rv, backoff = r, 0
			inf.setErr(nil)
		}
		started := time.Now()
		r, events, err := inf.watch(ctx, rv)
		if r != "" {
			rv = r
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case IsGone(err):
			// The version is older than the API server keeps: list again now.
			inf.expired.Add(1)
			inf.log.Info("kubernetes "+inf.resource+": resource version expired, listing again", logkey.Err, err)
			rv = ""
		case err != nil:
			var tl *TooLargeError
			if errors.As(err, &tl) {
				rv = "" // that event cannot be skipped: list again after the wait
			}
			if !wait(err) {
				return nil
			}
		case events == 0 && time.Since(started) < time.Second:
			// Closed at once without an event: not a healthy watch.
			if !wait(errors.New("watch ended at once without an event")) {
				return nil
			}
		default:
			backoff = 0 // the server's timeout ended it: watch on
		}
	}
	return nil
}

func (inf *Informer[T]) setErr(err error) {
	inf.mu.Lock()
	inf.err = err
	inf.mu.Unlock()
}

func (inf *Informer[T]) signal() {
	select {
	case inf.changed <- struct{}{}:
	default:
	}
}

// list reads every object, in pages, replaces the cache with them and
// returns the list's resource version.
func (inf *Informer[T]) list(ctx context.Context) (string, error) {
	inf.lists.Add(1)
	items := map[string]T{}
	q := url.Values{"limit": {strconv.Itoa(listPageSize)}}
	if inf.selector != "" {
		q.Set("fieldSelector", inf.selector)
	}
	for {
		meta, err := inf.listPage(ctx, q, items)
		if err != nil {
			return "", err
		}
		if meta.Continue == "" {
			inf.mu.Lock()
			inf.items, inf.synced = items, true
			inf.mu.Unlock()
			inf.signal()
			return meta.ResourceVersion, nil
		}
		q.Set("continue", meta.Continue)
	}
}

// listPage reads one page into items, decoding the objects one by one from
// the stream (each bounded by MaxObjectBytes).
func (inf *Informer[T]) listPage(ctx context.Context, q url.Values, items map[string]T) (listMeta, error) {
	var meta listMeta
	path := objectPath(inf.resource, "", "")
	resp, err := inf.c.request(ctx, http.MethodGet, path, q, nil, "")
	if err != nil {
		return meta, err
	}
	defer resp.Body.Close()
	d := newDecoder(resp.Body, inf.c.max, "object in the list of "+inf.resource)
	if err := decodeList(d, &meta, func(o T) { items[o.Meta().Key()] = o }); err != nil {
		return meta, fmt.Errorf("kubernetes API GET %s: %w", path, err)
	}
	return meta, nil
}

// decodeList reads a list object: its metadata, and each of its items
// handed to add.
func decodeList[T Object](d *decoder, meta *listMeta, add func(T)) error {
	if t, err := d.token(); err != nil {
		return err
	} else if t != json.Delim('{') {
		return fmt.Errorf("%w: a list is a JSON object", errBody)
	}
	for d.more() {
		t, err := d.token()
		if err != nil {
			return err
		}
		switch t {
		case "metadata":
			if err := d.decode(meta); err != nil {
				return err
			}
		case "items":
			t, err := d.token()
			if err != nil {
				return err
			}
			if t == nil {
				continue // null
			}
			if t != json.Delim('[') {
				return fmt.Errorf("%w: items is not an array", errBody)
			}
			for d.more() {
				var o T
				if err := d.decode(&o); err != nil {
					return err
				}
				if o == nil || o.Meta().Name == "" {
					return fmt.Errorf("%w: an item without a name", errBody)
				}
				add(o)
			}
			if _, err := d.token(); err != nil { // ]
				return err
			}
		default:
			var skip json.RawMessage
			if err := d.decode(&skip); err != nil {
				return err
			}
		}
	}
	_, err := d.token() // }
	return err
}

// minWatchTimeout is the least server-side timeout of one watch (as
// client-go: drawn between it and twice it, so that many agents do not
// come back at once).
const minWatchTimeout = 5 * time.Minute

// watch watches from rv until the stream ends or fails; it answers the
// last resource version seen and the number of events.
func (inf *Informer[T]) watch(ctx context.Context, rv string) (string, int, error) {
	timeout := minWatchTimeout + rand.N(minWatchTimeout)
	q := url.Values{"watch": {"true"}, "resourceVersion": {rv}, "allowWatchBookmarks": {"true"},
		"timeoutSeconds": {strconv.Itoa(int(timeout / time.Second))}}
	if inf.selector != "" {
		q.Set("fieldSelector", inf.selector)
	}
	// The client's own bound, should the server not end it.
	wctx, cancel := context.WithTimeout(ctx, timeout+time.Minute)
	defer cancel()
	path := objectPath(inf.resource, "", "")
	resp, err := inf.c.request(wctx, http.MethodGet, path, q, nil, "")
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	d := newDecoder(resp.Body, inf.c.max, "watch event of "+inf.resource)
	last, n := "", 0
	for {
		typ, obj, err := decodeEvent[T](d)
		if err != nil {
			if errors.Is(err, errEndOfStream) {
				err = nil
			} else if ctx.Err() == nil {
				err = fmt.Errorf("kubernetes API watch %s: %w", path, err)
			}
			return last, n, err
		}
		n++
		if n == 1 {
			inf.setErr(nil) // a healthy watch again
		}
		if typ == eventError {
			se := obj.(*StatusError)
			se.Path = path
			return last, n, se
		}
		o := obj.(T)
		last = o.Meta().ResourceVersion
		if typ == eventBookmark {
			continue
		}
		key := o.Meta().Key()
		inf.mu.Lock()
		if typ == eventDeleted {
			delete(inf.items, key)
		} else {
			inf.items[key] = o
		}
		inf.mu.Unlock()
		inf.signal()
	}
}

var errEndOfStream = errors.New("end of the watch stream")

// decodeEvent reads one watch event: its type and its object (a T), or for
// an ERROR event a *StatusError.
func decodeEvent[T Object](d *decoder) (string, any, error) {
	var ev watchEvent
	if err := d.decode(&ev); err != nil {
		if errors.Is(err, io.EOF) {
			return "", nil, errEndOfStream
		}
		return "", nil, err
	}
	switch ev.Type {
	case eventAdded, eventModified, eventDeleted, eventBookmark:
		var o T
		if err := json.Unmarshal(ev.Object, &o); err != nil {
			return "", nil, fmt.Errorf("%s event: %w", ev.Type, err)
		}
		if o == nil || (ev.Type != eventBookmark && o.Meta().Name == "") {
			return "", nil, fmt.Errorf("%w: %s event without an object name", errBody, ev.Type)
		}
		return ev.Type, o, nil
	case eventError:
		var st status
		_ = json.Unmarshal(ev.Object, &st)
		return ev.Type, &StatusError{Method: "WATCH", Code: st.Code, Reason: st.Reason, Message: st.Message}, nil
	}
	return "", nil, fmt.Errorf("%w: watch event type %q", errBody, ev.Type)
}
