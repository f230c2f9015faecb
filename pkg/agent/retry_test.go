package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestRetryDelay: the delay a controller asks for with RESOURCE_EXHAUSTED
// is found through the session's wrapping, capped, and ignored on other
// codes or without RetryInfo.
func TestRetryDelay(t *testing.T) {
	busy := func(code codes.Code, d time.Duration) error {
		st, _ := status.New(code, "busy").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		return st.Err()
	}
	for _, c := range []struct {
		err  error
		want time.Duration
		ok   bool
	}{
		{fmt.Errorf("report endpoints: %w", busy(codes.ResourceExhausted, 3*time.Second)), 3 * time.Second, true},
		{fmt.Errorf("route stream: %w", busy(codes.ResourceExhausted, time.Hour)), maxRetryDelay, true},
		{busy(codes.Unavailable, 3*time.Second), 0, false},
		{status.Error(codes.ResourceExhausted, "no block left"), 0, false},
		{errors.New("plain"), 0, false},
	} {
		if d, ok := retryDelay(c.err); d != c.want || ok != c.ok {
			t.Errorf("%v: %v %v, want %v %v", c.err, d, ok, c.want, c.ok)
		}
	}
}
