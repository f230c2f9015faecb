package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/pkg/iqrf/collector"
	"github.com/iotfabric/iotfabric/pkg/iqrf/coord"
	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
	"github.com/iotfabric/iotfabric/pkg/iqrf/graphite"
	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
	"github.com/iotfabric/iotfabric/pkg/iqrf/queue"
	"github.com/iotfabric/iotfabric/pkg/iqrf/uart"
)

func skipUnlessBench(t *testing.T) {
	if os.Getenv("IQRF_BENCH") == "" {
		t.Skip("set IQRF_BENCH=1 (make bench-iqrf) to run the benchmark")
	}
}

// Frames of the reference's vectors, as they come from a coordinator.
var vectors = []string{
	"01.00.5e.81.15.10.00.58.14.6a.16.02.e8.00.80.5c.0b.1c.00.a0.00.00.00.80.81.02.15.c5.09.15.f7.ff.15.2c.00.a0.00.00.00.00.10.40.3c.13.90.01.01.5a.01.03.06.00.04.46.11",
	"01.00.5e.01.ff.ff.ff.50.01.08.01",
	"01.00.5e.81.02.14.00.51.01.c8.01.02.87.09",
	"01.00.5e.be.15.10.00.58.14.02.80.0b.a0.81.15.15.15.a0.10.13.01.03.04",
	"00.00.00.82.00.00.00.47.0e.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00.00",
	"00.00.ff.bf.00.00.80.00.17.04.00.fd.26.00.00.00.00.00.00.05",
}

func frames(t testing.TB) [][]byte {
	var out [][]byte
	for _, v := range vectors {
		b, err := dpa.ParseDottedHex(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// naiveHeader is what a straightforward decoder reads with encoding/binary.
type naiveHeader struct {
	NADR  uint16
	PNUM  uint8
	PCMD  uint8
	HWPID uint16
	ErrN  uint8
	Value uint8
}

type naiveFrame struct {
	naiveHeader
	PData []byte
}

// naiveDecode is the peer: binary.Read of the header and a copy of PData,
// the usual way to write such a decoder.
func naiveDecode(b []byte) (*naiveFrame, error) {
	f := &naiveFrame{}
	r := bytes.NewReader(b)
	if len(b) < 8 {
		return nil, fmt.Errorf("short")
	}
	if err := binary.Read(r, binary.LittleEndian, &f.naiveHeader); err != nil {
		return nil, err
	}
	f.PData = make([]byte, r.Len())
	r.Read(f.PData)
	return f, nil
}

func rate(r testing.BenchmarkResult, perOp int) float64 {
	return float64(r.N*perOp) / r.T.Seconds()
}

func TestBenchDecode(t *testing.T) {
	skipUnlessBench(t)
	fs := frames(t)
	var wire []byte
	for _, f := range fs {
		wire = uart.AppendFrame(wire, f)
	}
	ours := testing.Benchmark(func(b *testing.B) {
		var f dpa.Frame
		for b.Loop() {
			for _, fr := range fs {
				if err := f.Decode(fr); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	withUART := testing.Benchmark(func(b *testing.B) {
		var d uart.Deframer
		var f dpa.Frame
		for b.Loop() {
			for _, c := range wire {
				m, ok, err := d.Push(c)
				if err != nil {
					b.Fatal(err)
				}
				if ok {
					if err := f.Decode(m); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	})
	peer := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			for _, fr := range fs {
				if _, err := naiveDecode(fr); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	n := len(fs)
	perFrame := func(r testing.BenchmarkResult) float64 { return float64(r.AllocsPerOp()) / float64(n) }
	fmt.Printf("BENCH iqrf dpa-decode: %.1f M frames/s on one core (%.0f allocs/frame), goal >= 5 M\n",
		rate(ours, n)/1e6, perFrame(ours))
	fmt.Printf("BENCH iqrf dpa-decode peer (encoding/binary.Read + PData copy): %.1f M frames/s (%.0f allocs/frame); ratio ours/peer %.1fx\n",
		rate(peer, n)/1e6, perFrame(peer), rate(ours, n)/rate(peer, n))
	fmt.Printf("BENCH iqrf uart-deframe+crc+decode: %.1f M frames/s (%.0f MB/s of wire bytes, %.0f allocs/frame)\n",
		rate(withUART, n)/1e6, float64(withUART.N*len(wire))/withUART.T.Seconds()/1e6, perFrame(withUART))
	if rate(ours, n) < 5e6 {
		t.Errorf("decode rate %.1f M frames/s, below the 5 M goal", rate(ours, n)/1e6)
	}
	if ours.AllocsPerOp() != 0 {
		t.Errorf("the decoder allocates")
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// waitOutq waits until carbon's TCP stack acknowledged everything written.
func waitOutq(t *testing.T, c *net.TCPConn) {
	rc, _ := c.SyscallConn()
	for {
		var n int
		rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Microsecond)
	}
}

func TestBenchLatencyToCarbon(t *testing.T) {
	skipUnlessBench(t)
	samples := 120
	carbon := iqrftest.StartCarbon(t)
	// One node with one temperature sensor whose value changes on every
	// read, so each line is matched to the response frame that carried it.
	node := &iqrftest.Node{Addr: 1, HWPID: 0x1402, Sensors: []iqrftest.Sensor{{Type: 0x01, Raw: []byte{0, 0}}}}
	sim := iqrftest.NewSim(node)
	sim.BeforeRead = func(n *iqrftest.Node) { binary.LittleEndian.PutUint16(n.Sensors[0].Raw, uint16(n.Reads%30000)) }
	var mu sync.Mutex
	sent := map[float64]time.Time{}
	sim.OnRead = func(e iqrftest.ReadEvent) {
		mu.Lock()
		sent[float64((e.Reads-1)%30000)/16] = e.Sent
		mu.Unlock()
	}
	pty, err := iqrftest.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { sim.Serve(ctx, pty.Master, true) })
	defer func() { cancel(); pty.Close(); wg.Wait() }()
	q, err := queue.Open(t.TempDir(), queue.Options{}, "graphite")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	col := collector.New(collector.Config{
		Open:     func() (coord.Link, error) { return uart.Open(pty.SlavePath, 57600) },
		Interval: 50 * time.Millisecond,
		Deliver: func(rs []collector.Reading) error {
			recs := make([][]byte, len(rs))
			for i, r := range rs {
				recs[i] = r.AppendRecord(nil)
			}
			return q.Append(recs...)
		},
	})
	lat := make(chan time.Duration, samples*2)
	wg.Go(func() { col.Run(ctx) })
	wg.Go(func() {
		graphite.Run(ctx, graphite.Config{Addr: carbon.Addr(), Prefix: "bench", Reader: q.Reader("graphite"),
			OnAccepted: func(r collector.Reading, at time.Time) {
				mu.Lock()
				s, ok := sent[r.Value]
				mu.Unlock()
				if ok {
					select {
					case lat <- at.Sub(s):
					default:
					}
				}
			}})
	})
	var ours []time.Duration
	for len(ours) < samples {
		select {
		case d := <-lat:
			ours = append(ours, d)
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d samples", len(ours))
		}
	}
	// Peer: a bare plaintext client writing one line to the same carbon and
	// waiting for the same TCP acknowledgement, with nothing in between.
	c, err := net.Dial("tcp", carbon.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var peer []time.Duration
	for i := range samples {
		line := fmt.Sprintf("bench.peer.value %d %d\n", i, time.Now().Unix())
		start := time.Now()
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		waitOutq(t, c.(*net.TCPConn))
		peer = append(peer, time.Since(start))
		time.Sleep(20 * time.Millisecond)
	}
	p50, p99 := percentile(ours, 50), percentile(ours, 99)
	q50, q99 := percentile(peer, 50), percentile(peer, 99)
	fmt.Printf("BENCH iqrf response-frame-to-carbon (pty, UART deframe, DPA, sensor decode, disk queue, plaintext line, carbon's TCP ack), %d readings: p50 %v p99 %v, goal < 100ms\n",
		samples, p50.Round(time.Microsecond), p99.Round(time.Microsecond))
	fmt.Printf("BENCH iqrf peer (bare TCP client: write one line to the same carbon, wait for its TCP ack): p50 %v p99 %v; ratio ours/peer p50 %.1fx p99 %.1fx\n",
		q50.Round(time.Microsecond), q99.Round(time.Microsecond), float64(p50)/float64(q50), float64(p99)/float64(q99))
	if p50 >= 100*time.Millisecond || p99 >= 100*time.Millisecond {
		t.Errorf("latency p50 %v p99 %v, goal under 100 ms", p50, p99)
	}
}
