package kubelite

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

var decodeSeeds = []string{
	`{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","namespace":"n","uid":"u","resourceVersion":"7","annotations":{"k":"v"}},"spec":{"nodeName":"node-1"}}}` + "\n" +
		`{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"9"}}}` + "\n",
	`{"type":"ERROR","object":{"kind":"Status","status":"Failure","message":"too old resource version: 1 (216)","reason":"Expired","code":410}}`,
	`{"kind":"PodList","metadata":{"resourceVersion":"12","continue":"abc"},"items":[{"metadata":{"name":"a","namespace":"n"}},{"metadata":{"name":"b","namespace":"n"}}]}`,
	`{"kind":"NamespaceList","metadata":{},"items":null}`,
	`  {"a":[1,2,{"b":"\u00e9\n"}]}   {} [] 12 true null "s"`,
	`{"type":"DELETED","object":{"metadata":{"name":"` + strings.Repeat("x", 300) + `"}}}`,
	`{"unterminated":`,
	`{"a":1}}`,
}

// FuzzDecoder: the bounded decoder reads exactly what encoding/json reads,
// value by value, as long as each takes at most max bytes, and refuses the
// first larger one with a TooLargeError.
func FuzzDecoder(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s), uint16(64))
		f.Add([]byte(s), uint16(4096))
	}
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		m := int64(max%8192) + 1
		ref := json.NewDecoder(bytes.NewReader(data))
		d := newDecoder(bytes.NewReader(data), m, "value")
		var tl *TooLargeError
		for range 1000 {
			start := ref.InputOffset()
			var want json.RawMessage
			rerr := ref.Decode(&want)
			size := ref.InputOffset() - start
			var got json.RawMessage
			err := d.decode(&got)
			switch {
			case rerr == io.EOF:
				if err != io.EOF && !errors.As(err, &tl) {
					t.Fatalf("at the end: %v", err)
				}
				return
			case rerr != nil:
				if err == nil {
					t.Fatalf("decoded %q where encoding/json refuses: %v", got, rerr)
				}
				return
			case size < m || (size == m && err == nil):
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("value of %d bytes (bound %d): got %q %v, want %q", size, m, got, err, want)
				}
			default:
				if !errors.As(err, &tl) || tl.Limit != m {
					t.Fatalf("value of %d bytes (bound %d) not refused: %q %v", size, m, got, err)
				}
				return
			}
		}
	})
}

// FuzzWatchEvent: any watch stream decodes to events whose objects have
// names (bookmarks apart) and survive an encode-decode round trip, or to
// an error; never a panic.
func FuzzWatchEvent(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDecoder(bytes.NewReader(data), 4096, "watch event")
		for range 100 {
			typ, obj, err := decodeEvent[*Pod](d)
			if err != nil {
				return
			}
			switch o := obj.(type) {
			case *StatusError:
				if typ != eventError {
					t.Fatalf("%s event with a status", typ)
				}
			case *Pod:
				if typ != eventBookmark && o.Metadata.Name == "" {
					t.Fatalf("%s event of a pod without a name", typ)
				}
				b, err := json.Marshal(o)
				if err != nil {
					t.Fatal(err)
				}
				var again Pod
				if err := json.Unmarshal(b, &again); err != nil || !reflect.DeepEqual(&again, normalize(o)) {
					t.Fatalf("round trip: %+v -> %s -> %+v %v", o, b, again, err)
				}
			default:
				t.Fatalf("%s event: object %T", typ, obj)
			}
		}
	})
}

// normalize drops an empty annotation map (omitempty drops it on encoding).
func normalize(p *Pod) *Pod {
	c := *p
	if len(c.Metadata.Annotations) == 0 {
		c.Metadata.Annotations = nil
	}
	return &c
}

// FuzzList: any list body decodes to named items, or to an error.
func FuzzList(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var meta listMeta
		n := 0
		err := decodeList(newDecoder(bytes.NewReader(data), 4096, "list item"), &meta, func(p *Pod) {
			if p.Metadata.Name == "" {
				t.Fatal("an item without a name")
			}
			n++
		})
		if err == nil {
			var ref struct {
				Items []json.RawMessage `json:"items"`
			}
			if json.Unmarshal(data, &ref) == nil && len(ref.Items) != n {
				t.Fatalf("%d items decoded, encoding/json sees %d", n, len(ref.Items))
			}
		}
	})
}

func TestDecodeList(t *testing.T) {
	var meta listMeta
	var names []string
	err := decodeList(newDecoder(strings.NewReader(decodeSeeds[2]), 1024, "item"), &meta, func(p *Pod) { names = append(names, p.Metadata.Key()) })
	if err != nil || meta.ResourceVersion != "12" || meta.Continue != "abc" || strings.Join(names, ",") != "n/a,n/b" {
		t.Fatalf("%+v %v %v", meta, names, err)
	}
	// One item over the bound: refused, and named so.
	big := `{"metadata":{},"items":[{"metadata":{"name":"a","annotations":{"x":"` + strings.Repeat("y", 2000) + `"}}}]}`
	err = decodeList(newDecoder(strings.NewReader(big), 1024, "object in the list of pods"), &meta, func(*Pod) {})
	var tl *TooLargeError
	if !errors.As(err, &tl) || !strings.Contains(err.Error(), "object in the list of pods larger than 1024 bytes") {
		t.Fatalf("oversized item: %v", err)
	}
	// The same list, each item small: the whole may be larger than the bound.
	var many strings.Builder
	many.WriteString(`{"items":[`)
	for i := range 100 {
		if i > 0 {
			many.WriteString(",")
		}
		many.WriteString(`{"metadata":{"name":"p` + strings.Repeat("x", 50) + `"}}`)
	}
	many.WriteString(`]}`)
	n := 0
	if err := decodeList(newDecoder(strings.NewReader(many.String()), 128, "item"), &meta, func(*Pod) { n++ }); err != nil || n != 100 {
		t.Fatalf("100 small items under a 128-byte bound: %d %v", n, err)
	}
}
