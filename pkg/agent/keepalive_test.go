package agent

import (
	"flag"
	"testing"
	"time"
)

func TestBackoffJitter(t *testing.T) {
	b := newBackoff(sessionRetryMin, sessionRetryMax)
	base := sessionRetryMin
	for i := range 12 {
		d := b.next()
		if d < base/2 || d > base {
			t.Fatalf("attempt %d: wait %v outside [%v, %v]", i, d, base/2, base)
		}
		base = min(2*base, sessionRetryMax)
	}
	// At the cap, many gateways' waits are spread over [max/2, max].
	seen := map[time.Duration]bool{}
	lo, hi := sessionRetryMax, time.Duration(0)
	for range 1000 {
		d := b.next()
		if d < sessionRetryMax/2 || d > sessionRetryMax {
			t.Fatalf("wait %v outside [%v, %v]", d, sessionRetryMax/2, sessionRetryMax)
		}
		seen[d] = true
		lo, hi = min(lo, d), max(hi, d)
	}
	if len(seen) < 900 || hi-lo < sessionRetryMax*4/10 {
		t.Fatalf("waits not spread: %d distinct, range [%v, %v]", len(seen), lo, hi)
	}
	b.reset()
	if d := b.next(); d > sessionRetryMin {
		t.Fatalf("after reset: wait %v > %v", d, sessionRetryMin)
	}
}

func TestKeepaliveFlags(t *testing.T) {
	for _, c := range []struct {
		args         []string
		time, tout   time.Duration
		off, wantErr bool
	}{
		{args: nil, time: DefaultKeepalive, tout: DefaultKeepaliveTimeout},
		{args: []string{"--keepalive", "15s", "--keepalive-timeout", "5s"}, time: 15 * time.Second, tout: 5 * time.Second},
		{args: []string{"--keepalive", "0"}, off: true},
		{args: []string{"--keepalive", "-1s"}, wantErr: true},
	} {
		var f Flags
		fs := flag.NewFlagSet("agent", flag.ContinueOnError)
		f.Register(fs)
		if err := fs.Parse(append([]string{"--gateway", "gw", "--underlay", "192.0.2.1"}, c.args...)); err != nil {
			t.Fatal(err)
		}
		o, err := f.Options(nil)
		if c.wantErr {
			if err == nil {
				t.Errorf("%v: no error", c.args)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		kp, on := o.keepalive()
		if on == c.off || on && (kp.Time != c.time || kp.Timeout != c.tout || !kp.PermitWithoutStream) {
			t.Errorf("%v: keepalive %+v on=%v, want %v/%v off=%v", c.args, kp, on, c.time, c.tout, c.off)
		}
	}
}
