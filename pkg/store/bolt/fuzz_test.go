package bolt

import (
	"bytes"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/store"
)

// FuzzDecodeLog: a corrupt change-log entry is an error, never a panic, and
// what encodeLog writes decodes back to the same event.
func FuzzDecodeLog(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00"), encodeLog(store.Put("networks/a", []byte("v"))))
	f.Add([]byte("short"), encodeLog(store.Delete("k")))
	f.Add([]byte("\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00"), []byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, lk, v []byte) {
		ev, err := decodeLog(lk, v)
		if err != nil {
			return
		}
		if ev.Type != store.EventPut && ev.Type != store.EventDelete && len(v) > 0 && v[0] != 0 {
			return // unknown types decode as such; the watch reader passes them on
		}
		op := store.Op{Key: ev.Key, Value: ev.Value, Delete: ev.Type == store.EventDelete}
		if ev.Type == store.EventPut || ev.Type == store.EventDelete {
			again, err := decodeLog(lk, encodeLog(op))
			if err != nil || again.Key != ev.Key || !bytes.Equal(again.Value, ev.Value) || again.Type != ev.Type {
				t.Fatalf("round trip: %+v -> %+v %v", ev, again, err)
			}
		}
	})
}
