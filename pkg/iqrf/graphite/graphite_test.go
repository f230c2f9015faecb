package graphite

import (
	"context"
	"io"
	"log/slog"
	"net"
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
	// Each reading was released once; some were sent more than once.
	if a, s := stats.TCPAcknowledged.Load(), stats.Sent.Load(); a != 30 || s < 30 {
		t.Errorf("tcp-acknowledged %d (want 30), sent %d (want at least 30)", a, s)
	}
}

// What the sink counts, against peers that are not carbon: a peer that
// closes the connection soon after reading gets the lines sent (its TCP
// stack acknowledged them) but never released, and they are sent again;
// a peer that reads and discards everything while keeping the connection
// open gets them released as tcp-acknowledged, though nothing was stored:
// the plaintext protocol cannot tell, which is why the counter is not called
// "stored" or "delivered".
func TestSentAndTCPAcknowledgedAreNotStored(t *testing.T) {
	for _, tc := range []struct {
		name     string
		holdOpen bool
	}{{"closes early", false}, {"black hole", true}} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			go func() {
				for {
					c, err := lis.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						if !tc.holdOpen {
							c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
						}
						io.Copy(io.Discard, c)
					}()
				}
			}()
			q, err := queue.Open(t.TempDir(), queue.Options{}, "graphite")
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			for i := range 5 {
				r := collector.Reading{Node: 2, Metric: "temperature", Value: float64(i), Time: time.Now().Add(time.Duration(i) * time.Second)}
				if err := q.Append(r.AppendRecord(nil)); err != nil {
					t.Fatal(err)
				}
			}
			stats := &Stats{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				Run(ctx, Config{Addr: lis.Addr().String(), Reader: q.Reader("graphite"), ConfirmAfter: time.Second,
					MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Stats: stats})
			}()
			defer func() { cancel(); <-done }()
			deadline := time.Now().Add(15 * time.Second)
			for {
				sent, acked := stats.Sent.Load(), stats.TCPAcknowledged.Load()
				if tc.holdOpen && acked == 5 && q.Reader("graphite").Pending() == 0 {
					return // released on TCP evidence alone; nothing was stored
				}
				if !tc.holdOpen && sent >= 10 { // sent twice at least, never released
					if acked != 0 || q.Reader("graphite").Pending() != 5 {
						t.Fatalf("closed within --graphite-confirm: tcp-acknowledged %d, pending %d", acked, q.Reader("graphite").Pending())
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("sent %d, tcp-acknowledged %d, pending %d", sent, acked, q.Reader("graphite").Pending())
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
