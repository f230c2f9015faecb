package graphite

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/collector"
	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
	"github.com/iotfabric/iotfabric/pkg/iqrf/queue"
)

func TestLine(t *testing.T) {
	r := collector.Reading{Node: 12, Metric: "acceleration_7", Value: -0.03515625, Time: time.Unix(1765450342, 900e6)}
	if got := string(Line(nil, "iotfabric.site1", r)); got != "iotfabric.site1.node12.acceleration_7 -0.03515625 1765450342\n" {
		t.Errorf("line %q", got)
	}
}

// waitPoints polls carbon's whisper file until it holds every wanted point.
func waitPoints(t *testing.T, c *iqrftest.Carbon, metric string, want map[int64]float64, limit time.Duration) {
	t.Helper()
	var from, until int64 = 1 << 62, 0
	for ts := range want {
		from, until = min(from, ts-1), max(until, ts+1)
	}
	deadline := time.Now().Add(limit)
	for {
		got, err := c.Fetch(metric, from, until)
		missing := 0
		for ts, v := range want {
			if g, ok := got[ts]; !ok || g != v {
				missing++
			}
		}
		if err == nil && missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d points missing after %v (err %v); got %v", metric, missing, len(want), limit, err, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestStoreAndForwardThroughCarbonRestart(t *testing.T) {
	carbon := iqrftest.StartCarbon(t)
	q, err := queue.Open(t.TempDir(), queue.Options{}, "graphite")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	stats := &Stats{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Addr: carbon.Addr(), Prefix: "test", Reader: q.Reader("graphite"), ConfirmAfter: 1500 * time.Millisecond,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Stats: stats,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	}()
	defer func() { cancel(); <-done }()
	base := time.Now().Add(-5 * time.Minute).Truncate(time.Second)
	want := map[int64]float64{}
	add := func(i int) {
		r := collector.Reading{Node: 2, Index: 0, Type: 1, Metric: "temperature", Value: 20 + float64(i)/16, Time: base.Add(time.Duration(i) * time.Second)}
		if err := q.Append(r.AppendRecord(nil)); err != nil {
			t.Fatal(err)
		}
		want[r.Time.Unix()] = r.Value
	}
	for i := range 10 {
		add(i)
	}
	waitPoints(t, carbon, "test.node2.temperature", want, 20*time.Second)
	// Uplink down: readings keep coming and wait on disk.
	carbon.Stop()
	for i := 10; i < 30; i++ {
		add(i)
	}
	deadline := time.Now().Add(10 * time.Second)
	for stats.Errors.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the sink did not notice carbon was gone")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p := q.Reader("graphite").Pending(); p < 20 {
		t.Errorf("pending %d while carbon is down, want at least 20", p)
	}
	carbon.Start()
	waitPoints(t, carbon, "test.node2.temperature", want, 30*time.Second)
	deadline = time.Now().Add(10 * time.Second)
	for q.Reader("graphite").Pending() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d pending", q.Reader("graphite").Pending())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
