package coord_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/coord"
	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
	"github.com/iotfabric/iotfabric/pkg/iqrf/sensor"
	"github.com/iotfabric/iotfabric/pkg/iqrf/uart"
)

// setup serves sim on a pty and opens the slave side as a UART link.
func setup(t *testing.T, sim *iqrftest.Sim, cfg coord.Config) (*coord.Coordinator, *iqrftest.PTY) {
	t.Helper()
	pty, err := iqrftest.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	link, err := uart.Open(pty.SlavePath, 57600)
	if err != nil {
		t.Fatal(err)
	}
	co := coord.New(link, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); sim.Serve(ctx, pty.Master, true) }()
	t.Cleanup(func() { cancel(); co.Close(); pty.Close(); <-served })
	return co, pty
}

func readS2(nadr uint16) dpa.Frame {
	return dpa.Frame{NADR: nadr, PNUM: dpa.PNUMStdSensor, PCMD: sensor.CmdReadSensorsWithTypes, HWPID: dpa.HWPIDDoNotCheck, PData: []byte{3, 0, 0, 0}}
}

func TestConfirmationResponseAndPacing(t *testing.T) {
	sim := iqrftest.NewSim(iqrftest.ReferenceNodes()...)
	sim.Hops, sim.SlotLength, sim.HopsResponse = 2, 8, 2 // an LP network, two hops each way
	var resets sync.WaitGroup
	resets.Add(1)
	var once sync.Once
	co, _ := setup(t, sim, coord.Config{OnAsync: func(f *dpa.Frame) {
		if f.IsReset() {
			once.Do(resets.Done)
		}
	}})
	resets.Wait() // the start-up reset message went to the async handler
	ctx := context.Background()
	r1, err := co.Do(ctx, readS2(2), 0)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Confirmation == nil || r1.Conf.Hops != 2 || r1.Conf.SlotLength != 8 || dpa.DottedHex(r1.Response) != "02.00.5e.81.02.14.00.40.01.c8.01.02.87.09" {
		t.Fatalf("result %+v", r1)
	}
	r2, err := co.Do(ctx, readS2(2), 0)
	if err != nil {
		t.Fatal(err)
	}
	// The second request waits until the first one's routing is over:
	// (2+1)*80 ms + (2+1)*80 ms (6 bytes of response PData on LP).
	earliest := r1.ConfirmTime.Add(480 * time.Millisecond)
	if r2.RequestTime.Before(earliest) {
		t.Errorf("second request sent %v after the first confirmation, want at least 480ms", r2.RequestTime.Sub(r1.ConfirmTime))
	}
	// The coordinator answers itself at once (no confirmation, no pacing
	// beyond the response).
	r3, err := co.Do(ctx, dpa.Frame{NADR: 0, PNUM: dpa.PNUMCoordinator, PCMD: dpa.CmdCoordAddrInfo, HWPID: dpa.HWPIDDoNotCheck}, 0)
	if err != nil || r3.Confirmation != nil || len(r3.Frame.PData) != 2 {
		t.Fatalf("addr info %+v %v", r3, err)
	}
}

func TestTimeoutRetriesAndTypedErrors(t *testing.T) {
	nodes := append(iqrftest.ReferenceNodes(), &iqrftest.Node{Addr: 9, Silent: true})
	sim := iqrftest.NewSim(nodes...)
	stats := &coord.Stats{}
	resetSeen := make(chan struct{})
	var once sync.Once
	co, pty := setup(t, sim, coord.Config{Stats: stats, Retries: 1, OnAsync: func(*dpa.Frame) { once.Do(func() { close(resetSeen) }) }})
	<-resetSeen // the start-up reset message, before any request
	ctx := context.Background()
	start := time.Now()
	_, err := co.Do(ctx, readS2(9), 0)
	if !errors.Is(err, coord.ErrTimeout) {
		t.Fatalf("silent node: %v", err)
	}
	// Two attempts, each with a confirmation then (1+1)*40 + (1+1)*60 + 40 = 240 ms.
	if d := time.Since(start); d < 480*time.Millisecond || d > 3*time.Second {
		t.Errorf("timed out after %v", d)
	}
	if stats.Timeouts.Load() != 1 || stats.Retries.Load() != 1 {
		t.Errorf("timeouts %d retries %d", stats.Timeouts.Load(), stats.Retries.Load())
	}
	// Not bonded: a response code, as a typed error, without retries.
	res, err := co.Do(ctx, readS2(77), 0)
	if !errors.Is(err, dpa.ErrorNADR) || res == nil || res.Frame.ErrN != dpa.ErrorNADR {
		t.Fatalf("unbonded: %v", err)
	}
	// HWPID mismatch.
	req := readS2(2)
	req.HWPID = 0x1234
	if _, err := co.Do(ctx, req, 0); !errors.Is(err, dpa.ErrorHWPID) {
		t.Fatalf("hwpid mismatch: %v", err)
	}
	// A reset instead of the response fails the attempt at once; the retry
	// succeeds.
	sim.Inject(iqrftest.FaultReset)
	start = time.Now()
	if _, err := co.Do(ctx, readS2(2), 0); err != nil {
		t.Fatalf("after reset: %v", err)
	}
	if stats.Resets.Load() < 2 || time.Since(start) > 2*time.Second {
		t.Errorf("resets %d after %v", stats.Resets.Load(), time.Since(start))
	}
	// A CRC error is counted; the retry succeeds.
	sim.Inject(iqrftest.FaultCRC)
	if _, err := co.Do(ctx, readS2(2), 0); err != nil {
		t.Fatalf("after CRC error: %v", err)
	}
	if stats.FrameErrors.Load() != 1 {
		t.Errorf("frame errors %d", stats.FrameErrors.Load())
	}
	// Context cancellation is honoured.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := co.Do(cctx, readS2(9), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled: %v", err)
	}
	// Unplugged: the link is gone, Done closes, requests fail with ErrClosed.
	pty.Close()
	select {
	case <-co.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the pty went away")
	}
	if _, err := co.Do(ctx, readS2(2), 0); !errors.Is(err, coord.ErrClosed) {
		t.Fatalf("after unplug: %v", err)
	}
}
