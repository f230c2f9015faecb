package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/validate"
)

func TestStatus(t *testing.T) {
	grpcErr := status.Error(codes.PermissionDenied, "from a stream")
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{nil, codes.OK, ""},
		{model.Errorf(model.ErrInvalid, "network %s: bad", "n"), codes.InvalidArgument, "network n: bad"},
		{model.Errorf(model.ErrNotFound, "gateway %q not found", "g"), codes.NotFound, `gateway "g" not found`},
		{model.Errorf(model.ErrExists, "network %q already exists", "n"), codes.AlreadyExists, `network "n" already exists`},
		{model.Errorf(model.ErrConflict, "delete them first"), codes.FailedPrecondition, "delete them first"},
		{model.Errorf(model.ErrExhausted, "no free address"), codes.ResourceExhausted, "no free address"},
		{model.Errorf(model.ErrAborted, "try again"), codes.Aborted, "try again"},
		{model.Errorf(model.ErrUnavailable, "store: %w", errors.New("down")), codes.Unavailable, "store: down"},
		{model.Errorf(model.ErrCorrupt, "corrupt record k"), codes.Internal, "corrupt record k"},
		{model.Errorf(model.ErrUnauthenticated, "token used"), codes.Unauthenticated, "token used"},
		// Wrapped further, the kind is still found; the message is the whole text.
		{fmt.Errorf("request 7: %w", model.Errorf(model.ErrNotFound, "endpoint x not found")), codes.NotFound, "request 7: endpoint x not found"},
		// A kind wrapping a context error: the cancellation wins.
		{model.Errorf(model.ErrUnavailable, "store: %w", context.Canceled), codes.Canceled, "store: context canceled"},
		{fmt.Errorf("list: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "list: context deadline exceeded"},
		{fmt.Errorf("%w; restart the watch with from_revision 0", store.ErrCompacted), codes.OutOfRange, "revision compacted; restart the watch with from_revision 0"},
		{store.ErrClosed, codes.Unavailable, "store closed"},
		// pkg/validate's errors, marked or not: the value is quoted short.
		{validate.Name("network", strings.Repeat("n", 1000)), codes.InvalidArgument, `network name "` + strings.Repeat("n", 64) + `"… (1000 bytes) is too long: the limit is 63 characters`},
		{model.Invalid(validate.Bulk(1001)), codes.InvalidArgument, "1001 endpoints in one call: the limit is 1000; split the request"},
		{errors.New("something else"), codes.Unknown, "something else"},
		{grpcErr, codes.PermissionDenied, "from a stream"},
	} {
		got := Status(tc.err)
		if tc.err == nil {
			if got != nil {
				t.Errorf("Status(nil) = %v", got)
			}
			continue
		}
		st, ok := status.FromError(got)
		if !ok || st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("Status(%v) = %v %q, want %v %q", tc.err, st.Code(), st.Message(), tc.code, tc.msg)
		}
		if Code(tc.err) != tc.code {
			t.Errorf("Code(%v) = %v, want %v", tc.err, Code(tc.err), tc.code)
		}
	}
}

// The message keeps the chain: errors.Is still finds what it wraps.
func TestErrorfKeepsChain(t *testing.T) {
	cause := errors.New("cause")
	err := model.Errorf(model.ErrInvalid, "endpoint e: %w", cause)
	if !errors.Is(err, cause) || !errors.Is(err, model.ErrInvalid) || errors.Is(err, model.ErrNotFound) {
		t.Fatalf("chain lost: %v", err)
	}
	if err.Error() != "endpoint e: cause" {
		t.Fatalf("message %q", err.Error())
	}
}
