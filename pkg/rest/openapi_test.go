package rest

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// openAPIDoc is what the tests read of the OpenAPI document.
type openAPIDoc struct {
	Paths       map[string]map[string]openAPIOp `json:"paths"`
	Definitions map[string]struct {
		Title      string                     `json:"title"`
		Properties map[string]json.RawMessage `json:"properties"`
	} `json:"definitions"`
}

type openAPIOp struct {
	Produces  []string `json:"produces"`
	Responses map[string]struct {
		Description string `json:"description"`
		Schema      struct {
			Ref        string          `json:"$ref"`
			Title      string          `json:"title"`
			Properties json.RawMessage `json:"properties"`
		} `json:"schema"`
	} `json:"responses"`
}

func readOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// The document's error is the JSON this package writes: the definition's
// properties are exactly Error's JSON fields, and every operation's
// default response is it.
func TestOpenAPIErrors(t *testing.T) {
	doc := readOpenAPI(t)
	def, ok := doc.Definitions["v1RestError"]
	if !ok {
		t.Fatal("no v1RestError definition")
	}
	var fields []string
	et := reflect.TypeFor[Error]()
	for i := range et.NumField() {
		fields = append(fields, strings.Split(et.Field(i).Tag.Get("json"), ",")[0])
	}
	// And what writeError really writes has those keys.
	w := &recorder{header: http.Header{}}
	writeError(w, status.Error(codes.NotFound, "x"))
	var written map[string]any
	if err := json.Unmarshal(w.body, &written); err != nil {
		t.Fatal(err)
	}
	var props, keys []string
	for k := range def.Properties {
		props = append(props, k)
	}
	for k := range written {
		keys = append(keys, k)
	}
	slices.Sort(fields)
	slices.Sort(props)
	slices.Sort(keys)
	if !slices.Equal(props, fields) || !slices.Equal(keys, fields) {
		t.Errorf("v1RestError has %v, Error %v, an error response %v", props, fields, keys)
	}
	if _, ok := doc.Definitions["rpcStatus"]; ok {
		t.Error("the document still describes grpc-gateway's default error (rpcStatus)")
	}
	n := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			n++
			if ref := op.Responses["default"].Schema.Ref; ref != "#/definitions/v1RestError" {
				t.Errorf("%s %s: default response %q, want the RestError", method, path, ref)
			}
		}
	}
	if n < 30 {
		t.Errorf("only %d operations", n)
	}
}

// The watches' 200 responses describe the server-sent events' data (the
// event message), not grpc-gateway's stream wrapper; every watch served
// here is one, and no other operation produces events.
func TestOpenAPIWatches(t *testing.T) {
	doc := readOpenAPI(t)
	want := map[string]string{
		"/v1/networks:watch":  "v1NetworkEvent",
		"/v1/gateways:watch":  "v1GatewayEvent",
		"/v1/endpoints:watch": "v1EndpointEvent",
		"/v1/routes:watch":    "v1RouteEvent",
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			def, watch := want[path]
			sse := slices.Contains(op.Produces, "text/event-stream")
			if sse != watch {
				t.Errorf("%s %s: produces %v", method, path, op.Produces)
			}
			ok := op.Responses["200"]
			if ok.Schema.Title != "" && strings.HasPrefix(ok.Schema.Title, "Stream result of") {
				t.Errorf("%s %s: 200 is grpc-gateway's stream wrapper", method, path)
			}
			if !watch {
				continue
			}
			if ok.Schema.Ref != "#/definitions/"+def || !strings.Contains(ok.Description, "data:") || !strings.Contains(ok.Description, "event: error") {
				t.Errorf("%s %s: 200 %+v, want the %s as the events' data", method, path, ok, def)
			}
			if _, ok := doc.Definitions[def]; !ok {
				t.Errorf("no definition %s", def)
			}
			delete(want, path)
		}
	}
	for path := range want {
		t.Errorf("no watch %s in the document", path)
	}
	// The handler serves exactly those watches.
	h, _ := newTestHandler(t, nil)
	for path := range map[string]bool{"/v1/networks:watch": true, "/v1/gateways:watch": true, "/v1/endpoints:watch": true, "/v1/routes:watch": true} {
		req, _ := http.NewRequest(http.MethodGet, path, nil)
		if _, pattern := h.mux.Handler(req); pattern != "GET "+path {
			t.Errorf("%s is served by %q, not as a watch", path, pattern)
		}
	}
}

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	header http.Header
	code   int
	body   []byte
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { r.body = append(r.body, b...); return len(b), nil }
