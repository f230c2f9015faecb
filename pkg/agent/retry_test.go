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

// TestJitterRetry: the wait after a controller asked to retry in d is never
// sooner than d nor later than a quarter of d more, and spread over that
// range (not always the same); a negative delay waits nothing.
func TestJitterRetry(t *testing.T) {
	for _, d := range []time.Duration{0, time.Nanosecond, time.Second, 8 * time.Second, maxRetryDelay} {
		seen := map[time.Duration]bool{}
		lo, hi := time.Duration(1<<62), time.Duration(0)
		for range 2000 {
			w := jitterRetry(d)
			if w < d || w > d+d/4 {
				t.Fatalf("retry in %v: waits %v, want within [%v, %v]", d, w, d, d+d/4)
			}
			seen[w] = true
			lo, hi = min(lo, w), max(hi, w)
		}
		if d >= time.Second && (len(seen) < 1000 || hi-lo < d/5) {
			t.Errorf("retry in %v: %d distinct waits in [%v, %v]; want them spread over [%v, %v]", d, len(seen), lo, hi, d, d+d/4)
		}
	}
	if w := jitterRetry(-time.Second); w != 0 {
		t.Errorf("retry in -1s: waits %v, want 0", w)
	}
}
