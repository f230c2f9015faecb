package api

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/validate"
)

// toGRPCCode is the one table from domain errors to gRPC codes. It is read in
// order: the first entry err wraps (errors.Is) gives the code. Context errors
// come first, so that a cancelled request is reported as such whatever the
// domain made of it.
var toGRPCCode = []struct {
	err  error
	code codes.Code
}{
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{model.ErrInvalid, codes.InvalidArgument},
	{validate.ErrInvalid, codes.InvalidArgument},
	{validate.ErrLimit, codes.InvalidArgument},
	{model.ErrNotFound, codes.NotFound},
	{model.ErrExists, codes.AlreadyExists},
	{model.ErrConflict, codes.FailedPrecondition},
	{model.ErrExhausted, codes.ResourceExhausted},
	{model.ErrAborted, codes.Aborted},
	{model.ErrCorrupt, codes.Internal},
	{model.ErrUnauthenticated, codes.Unauthenticated},
	{model.ErrUnavailable, codes.Unavailable},
	{store.ErrCompacted, codes.OutOfRange},
	{store.ErrClosed, codes.Unavailable},
	{store.ErrNotFound, codes.NotFound},
}

// Status converts an error of the domain into a gRPC status error whose
// message is the error's text. nil stays nil, and a status error (from a
// stream's Send, for instance) is returned as it is. An error of no known kind
// becomes Unknown.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	st := status.New(Code(err), err.Error())
	var ra *model.RetryAfter
	if errors.As(err, &ra) {
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(ra.After)}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// Code returns the gRPC code for err (OK for nil).
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	for _, m := range toGRPCCode {
		if errors.Is(err, m.err) {
			return m.code
		}
	}
	return codes.Unknown
}
