package api

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/model"
)

// refusal returns the retry delay of a refused acquire.
func refusal(t *testing.T, a *admission) time.Duration {
	t.Helper()
	release, err := a.acquire(context.Background())
	var ra *model.RetryAfter
	if !errors.As(err, &ra) {
		if err == nil {
			release()
		}
		t.Fatalf("acquire with every slot taken: %v, want a refusal with a retry delay", err)
	}
	return ra.After
}

// TestRefusalsSpread: 700 calls refused in a row, with every slot taken and
// a hold of 800 ms on 4 slots (a turn every 100 ms: half of 800 ms / 4),
// reserve turns one apart and are given the delays until them: never below the minimum,
// about 590 different ones, capped at maxFullSyncRetry (the clock reserves
// no further), where the rule before gave them all the same delay. A refusal after the reserved turns
// are past is given the short delay again; one that could have waited is
// told to come back half its wait before its turn.
func TestRefusalsSpread(t *testing.T) {
	const slots, hold = 4, 800 * time.Millisecond
	const step = hold / slots / 2 // between turns
	newFull := func(reserve bool) *admission {
		a := newAdmission(slots, "test calls")
		a.wait, a.reserve = 0, reserve
		a.hold.Store(int64(hold))
		for range slots {
			if _, err := a.acquire(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		return a
	}

	old := newFull(false)
	for i := range 100 {
		if d := refusal(t, old); d != fullSyncRetry {
			t.Fatalf("rule before: refusal %d given %v, want %v as every other", i, d, fullSyncRetry)
		}
	}

	a := newFull(true)
	clamp := func(d time.Duration) time.Duration { return min(max(fullSyncRetry, d), maxFullSyncRetry) }
	var ds []time.Duration
	var prev time.Time
	for i := range 700 {
		before := time.Now()
		d := refusal(t, a)
		after := time.Now()
		ds = append(ds, d)
		a.mu.Lock()
		next := a.next
		a.mu.Unlock()
		// The turn reserved: one after the previous, up to the cap.
		if i > 0 && next.Sub(prev) != step && !next.After(after.Add(maxFullSyncRetry)) && next.Before(before.Add(maxFullSyncRetry)) {
			t.Fatalf("refusal %d: turn %v after the previous one, want %v", i, next.Sub(prev), step)
		}
		if next.After(after.Add(maxFullSyncRetry)) {
			t.Fatalf("refusal %d: turn reserved %v ahead, more than %v", i, next.Sub(after), maxFullSyncRetry)
		}
		// The delay: until the turn, at least the minimum, at most the cap.
		if d < clamp(next.Sub(after)) || d > clamp(next.Sub(before)) {
			t.Fatalf("refusal %d given %v, want %v until its turn within [%v, %v]", i, d, next.Sub(before), fullSyncRetry, maxFullSyncRetry)
		}
		prev = next
	}
	distinct := map[time.Duration]bool{}
	for _, d := range ds {
		distinct[d] = true
	}
	// Turns at 0.3 s, 0.4 s... (the queue of one, then one turn each): the
	// first 8 within the minimum, then one turn later each up to the cap at about
	// turn 600.
	if len(distinct) < 550 || ds[0] != fullSyncRetry || ds[650] != maxFullSyncRetry || ds[len(ds)-1] != maxFullSyncRetry {
		t.Fatalf("%d distinct delays, first %v, 651st %v, last %v; want about 590, %v, %v, %v",
			len(distinct), ds[0], ds[650], ds[len(ds)-1], fullSyncRetry, maxFullSyncRetry, maxFullSyncRetry)
	}
	a.mu.Lock()
	ahead := time.Until(a.next)
	a.mu.Unlock()
	if ahead > maxFullSyncRetry {
		t.Fatalf("the clock reserves %v ahead, more than %v", ahead, maxFullSyncRetry)
	}
	// Past the reserved turns: the queue's drain time and one turn again.
	later := time.Now().Add(2 * maxFullSyncRetry)
	if d := a.retryDelay(later, 1, 0); d != fullSyncRetry {
		t.Fatalf("a refusal after the reserved turns are past: %v, want %v", d, fullSyncRetry)
	}
	// 200 waiting (40 s), one turn: 40.1 s, less half a wait of 5 s.
	later = later.Add(2 * maxFullSyncRetry)
	if d, want := a.retryDelay(later, 200, 5*time.Second), 200*hold/slots+step-5*time.Second/2; d != want {
		t.Fatalf("a refusal with 200 waiting that could have waited 5 s: %v, want %v", d, want)
	}
}

// TestHoldFalls: after holds of 20 ms the estimate is 20 ms; when the holds
// fall to 2 ms it is within 10% of that after 16 releases (the average
// before, weighing every hold by 1/8, still over twice that); one longer
// hold raises it by an eighth of the difference.
func TestHoldFalls(t *testing.T) {
	for _, reserve := range []bool{true, false} {
		a := newAdmission(64, "test calls")
		a.reserve = reserve
		for range 50 {
			a.held(20 * time.Millisecond)
		}
		if h := time.Duration(a.hold.Load()); h != 20*time.Millisecond {
			t.Fatalf("after holds of 20 ms: %v", h)
		}
		for range 16 {
			a.held(2 * time.Millisecond)
		}
		h := time.Duration(a.hold.Load())
		if reserve && h > 2200*time.Microsecond || !reserve && h < 4*time.Millisecond {
			t.Fatalf("reserve %v: after 16 holds of 2 ms the estimate is %v", reserve, h)
		}
		t.Logf("reserve %v: after 16 holds of 2 ms the estimate is %v", reserve, h)
		if !reserve {
			continue
		}
		a.hold.Store(int64(2 * time.Millisecond))
		a.held(18 * time.Millisecond)
		if h := time.Duration(a.hold.Load()); h != 4*time.Millisecond {
			t.Fatalf("a hold of 18 ms after 2 ms: %v, want 4ms", h)
		}
	}
}

// TestBenchAdmission is make bench-admission: N callers arrive at once on
// an admission of 64 slots whose work takes ADMISSION_SLOW (20 ms) for the
// first ADMISSION_SLOW_FOR (2 s), then ADMISSION_FAST (2 ms), its hold
// estimate the slow work's (a controller in its busiest seconds). Each call
// gives the slot up after its work; each refused caller waits as the agent
// does and asks again, each attempt with the 10 s deadline of the agent's
// Register. Printed, for the rule before (delays the queue's drain time,
// agents waiting [d, 2d]) and the reservation clock (agents waiting
// [d, d+d/4]): the time until every caller was served, the refusals, and
// their ratio. IOTFABRIC_BENCH_ADMISSION sets N.
func TestBenchAdmission(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("IOTFABRIC_BENCH_ADMISSION"))
	if n <= 0 {
		t.Skip("benchmark: run with IOTFABRIC_BENCH_ADMISSION=<callers> (make bench-admission)")
	}
	env := func(name string, def time.Duration) time.Duration {
		if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
			return d
		}
		return def
	}
	slow, slowFor, fast := env("ADMISSION_SLOW", 20*time.Millisecond), env("ADMISSION_SLOW_FOR", 2*time.Second), env("ADMISSION_FAST", 2*time.Millisecond)
	const slots = 64
	type result struct {
		took             time.Duration
		refused          int64
		dMin, dMed, dMax time.Duration
	}
	run := func(reserve bool) result {
		a := newAdmission(slots, "bench calls")
		a.reserve = reserve
		a.hold.Store(int64(slow))
		// The agent's wait after a refusal: [d, 2d] before, [d, d+d/4] now
		// (pkg/agent jitterRetry).
		jitter := func(d time.Duration) time.Duration { return d + rand.N(d/4+1) }
		if !reserve {
			jitter = func(d time.Duration) time.Duration { return d + rand.N(d+1) }
		}
		var (
			mu     sync.Mutex
			delays []time.Duration
			last   atomic.Int64
			wg     sync.WaitGroup
		)
		start := make(chan struct{})
		var t0 time.Time
		for range n {
			wg.Go(func() {
				<-start
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					release, err := a.acquire(ctx)
					cancel()
					if err == nil {
						work := fast
						if time.Since(t0) < slowFor {
							work = slow
						}
						time.Sleep(work)
						release()
						done := int64(time.Since(t0))
						for l := last.Load(); done > l && !last.CompareAndSwap(l, done); l = last.Load() {
						}
						return
					}
					var ra *model.RetryAfter
					if !errors.As(err, &ra) {
						t.Errorf("acquire: %v", err)
						return
					}
					mu.Lock()
					delays = append(delays, ra.After)
					mu.Unlock()
					time.Sleep(jitter(ra.After))
				}
			})
		}
		t0 = time.Now()
		close(start)
		wg.Wait()
		r := result{took: time.Duration(last.Load()), refused: a.refused.Load()}
		if len(delays) > 0 {
			slices.Sort(delays)
			r.dMin, r.dMed, r.dMax = delays[0], delays[len(delays)/2], delays[len(delays)-1]
		}
		return r
	}
	before, now := run(false), run(true)
	if t.Failed() {
		t.FailNow()
	}
	fmt.Printf("bench-admission: %d callers at once, %d slots, work %v for the first %v then %v\n", n, slots, slow, slowFor, fast)
	for _, c := range []struct {
		name string
		r    result
	}{{"before (drain time, agents [d, 2d])", before}, {"now (reservation clock, agents [d, d+d/4])", now}} {
		fmt.Printf("bench-admission: %-44s all served in %6.2f s, %5d refusals, delays given min %v median %v max %v\n",
			c.name, c.r.took.Seconds(), c.r.refused, c.r.dMin.Round(time.Millisecond), c.r.dMed.Round(time.Millisecond), c.r.dMax.Round(time.Millisecond))
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return strconv.FormatFloat(a/b, 'f', 2, 64)
	}
	fmt.Printf("bench-admission: now/before: time until all served %s, refusals %s\n",
		ratio(now.took.Seconds(), before.took.Seconds()), ratio(float64(now.refused), float64(before.refused)))
}
