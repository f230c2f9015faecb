package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/iotfabric/iotfabric/pkg/validate"
)

// Error is the JSON body of every error response: the gRPC status code (as
// a number and by name), the message gRPC would give, and the status's
// details, each as protojson of a google.protobuf.Any.
type Error struct {
	Code     codes.Code        `json:"code"`
	CodeName string            `json:"codeName"`
	Message  string            `json:"message"`
	Details  []json.RawMessage `json:"details"`
}

// errorOf converts err (a gRPC status error, else Unknown) to its JSON body.
func errorOf(err error) Error {
	s := status.Convert(err)
	e := Error{Code: s.Code(), CodeName: codeName(s.Code()), Message: s.Message(), Details: []json.RawMessage{}}
	for _, d := range s.Proto().GetDetails() {
		if b, err := protojson.Marshal(d); err == nil {
			e.Details = append(e.Details, b)
		}
	}
	return e
}

// codeName is the canonical name of c: INVALID_ARGUMENT, NOT_FOUND...
func codeName(c codes.Code) string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}

var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
	codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
	codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

// WriteError answers the request with err (a gRPC status error, else
// UNKNOWN) as the API's JSON error, with the HTTP status grpc-gateway maps
// its code to: for the handlers mounted through Options.Extra (the web
// console), so that every error on the listener is the same JSON.
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

// writeError answers the request with err as JSON, with the HTTP status
// grpc-gateway maps its code to.
func writeError(w http.ResponseWriter, err error) {
	writeErrorStatus(w, err, 0)
}

// writeErrorStatus is writeError with an HTTP status of its own (0: the
// one of the code).
func writeErrorStatus(w http.ResponseWriter, err error, httpStatus int) {
	e := errorOf(err)
	if httpStatus == 0 {
		httpStatus = runtime.HTTPStatusFromCode(e.Code)
	}
	b, merr := json.Marshal(e)
	if merr != nil { // cannot happen: every field marshals
		b = []byte(`{"code":13,"codeName":"INTERNAL","message":"error response not marshalled","details":[]}`)
	}
	h := w.Header()
	h.Del("Trailer")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.Code == codes.Unauthenticated {
		h.Set("WWW-Authenticate", `Mutual-TLS realm="iotfabric"`)
	}
	w.WriteHeader(httpStatus)
	w.Write(append(b, '\n'))
}

// bodyTooLarge is the error of a request body over validate.MaxRequestBytes.
var bodyTooLarge = status.Errorf(codes.ResourceExhausted, "request body over %d bytes (the API's limit on a request)", validate.MaxRequestBytes)

// limitKey keys a request's *limitedBody in its context.
type limitKey struct{}

// gatewayError is the gateway's error handler: writeError, with a body over
// the limit reported as such (the gateway sees only a failed read).
func gatewayError(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if lb, ok := r.Context().Value(limitKey{}).(*limitedBody); ok && lb.exceeded {
		writeErrorStatus(w, bodyTooLarge, http.StatusRequestEntityTooLarge)
		return
	}
	var hs *runtime.HTTPStatusError
	if errors.As(err, &hs) {
		err = hs.Err
	}
	writeError(w, err)
}

// limitedBody is a request body that fails past validate.MaxRequestBytes,
// and remembers that it did.
type limitedBody struct {
	rc       io.ReadCloser // an http.MaxBytesReader
	exceeded bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.exceeded = true
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
