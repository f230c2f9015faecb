// Package coord runs DPA transactions with an IQRF coordinator the way the
// coordinator needs them: one at a time, confirmation then response, with
// timeouts computed from hops and timeslots, retries, pacing so a request is
// never sent while the previous one is still being routed, and asynchronous
// frames (including the coordinator's reset message) routed apart from the
// pending answer.
package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// Link carries whole DPA messages to and from the coordinator (UART, USB CDC
// or SPI).
type Link interface {
	// WriteFrame sends one DPA message.
	WriteFrame(p []byte) error
	// ReadFrame blocks until one DPA message arrives and copies it into p.
	// Errors wrapping dpa.ErrMalformed are about one bad frame; any other
	// error means the link is gone.
	ReadFrame(p []byte) (int, error)
	// Close releases the link; a blocked ReadFrame returns.
	Close() error
}

// Errors of a transaction.
var (
	// ErrTimeout: the confirmation or the response did not come in time,
	// after every retry.
	ErrTimeout = errors.New("no answer in time")
	// ErrReset: the coordinator reset while the transaction was pending.
	ErrReset = errors.New("coordinator reset during the transaction")
	// ErrClosed: the link is gone.
	ErrClosed = errors.New("coordinator link closed")
)

// Stats counts what happened on a link. All fields are updated atomically.
type Stats struct {
	Transactions atomic.Uint64
	Timeouts     atomic.Uint64 // transactions that failed with ErrTimeout
	Retries      atomic.Uint64
	FrameErrors  atomic.Uint64 // frames dropped by the link layer or the DPA decoder
	Stray        atomic.Uint64 // answers that matched no pending request
	Async        atomic.Uint64 // asynchronous frames
	Resets       atomic.Uint64 // coordinator reset messages
}

// Config tunes a Coordinator. The zero value is usable.
type Config struct {
	// Retries after a timeout (default 2; negative: none).
	Retries int
	// ConfirmTimeout bounds the wait for a confirmation (default 500 ms).
	ConfirmTimeout time.Duration
	// LocalTimeout bounds requests the coordinator answers itself, without
	// a confirmation (default 500 ms).
	LocalTimeout time.Duration
	// OnAsync receives asynchronous frames (the reset message included). It
	// runs on the reader goroutine and must not block. The frame's PData is
	// only valid during the call.
	OnAsync func(*dpa.Frame)
	Logger  *slog.Logger
	Stats   *Stats
}

// Result is one finished transaction. Byte slices are owned by the Result.
type Result struct {
	Request      []byte
	Confirmation []byte // nil when none was sent
	Response     []byte
	RequestTime  time.Time
	ConfirmTime  time.Time
	ResponseTime time.Time
	// Conf and Frame are the decoded confirmation and response; their PData
	// alias Confirmation and Response.
	Conf  dpa.Frame
	Frame dpa.Frame
}

// Coordinator serialises DPA transactions over one link.
type Coordinator struct {
	link  Link
	cfg   Config
	log   *slog.Logger
	stats *Stats

	rx    chan []byte   // decoded-valid frames other than async ones
	reset chan struct{} // a reset message arrived
	done  chan struct{} // the reader stopped
	err   error         // why; set before done is closed

	sem chan struct{} // one transaction at a time; holds nextSend
	// nextSend is guarded by sem.
	nextSend time.Time

	closeOnce sync.Once
}

// New starts reading from link. Close the Coordinator to stop.
func New(link Link, cfg Config) *Coordinator {
	if cfg.Retries == 0 {
		cfg.Retries = 2
	} else if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.ConfirmTimeout <= 0 {
		cfg.ConfirmTimeout = dpa.DefaultTimeout
	}
	if cfg.LocalTimeout <= 0 {
		cfg.LocalTimeout = dpa.DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = &Stats{}
	}
	c := &Coordinator{
		link: link, cfg: cfg, log: cfg.Logger, stats: cfg.Stats,
		rx:    make(chan []byte, 16),
		reset: make(chan struct{}, 1),
		done:  make(chan struct{}),
		sem:   make(chan struct{}, 1),
	}
	go c.readLoop()
	return c
}

// Done is closed when the link is gone; Err then says why.
func (c *Coordinator) Done() <-chan struct{} { return c.done }

// Err is the reason the link stopped, or nil while it runs.
func (c *Coordinator) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close closes the link and waits for the reader to stop.
func (c *Coordinator) Close() error {
	var err error
	c.closeOnce.Do(func() { err = c.link.Close() })
	<-c.done
	return err
}

// Stats returns the counters.
func (c *Coordinator) Stats() *Stats { return c.stats }

func (c *Coordinator) readLoop() {
	var buf [dpa.MaxFrame + 8]byte
	var f dpa.Frame
	for {
		n, err := c.link.ReadFrame(buf[:])
		if err != nil {
			if errors.Is(err, dpa.ErrMalformed) {
				c.stats.FrameErrors.Add(1)
				c.log.Warn("bad frame from coordinator", logkey.Err, err)
				continue
			}
			c.err = fmt.Errorf("%w: %w", ErrClosed, err)
			close(c.done)
			return
		}
		if err := f.Decode(buf[:n]); err != nil {
			c.stats.FrameErrors.Add(1)
			c.log.Warn("bad frame from coordinator", logkey.Err, err, logkey.Frame, dpa.DottedHex(buf[:n]))
			continue
		}
		if f.Kind == dpa.KindAsync || f.Kind == dpa.KindRequest {
			c.stats.Async.Add(1)
			if f.IsReset() {
				c.stats.Resets.Add(1)
				c.log.Info("coordinator reset")
				select {
				case c.reset <- struct{}{}:
				default:
				}
			}
			if c.cfg.OnAsync != nil {
				c.cfg.OnAsync(&f)
			}
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		select {
		case c.rx <- msg:
		default:
			c.stats.Stray.Add(1)
			c.log.Warn("answer dropped: nobody is waiting", logkey.Frame, dpa.DottedHex(msg))
		}
	}
}

// Do runs one transaction: it waits for the network to be free, sends req,
// and waits for the confirmation (remote nodes) and the response. timeout,
// when positive, replaces the computed response timeout (for requests such
// as FRC whose duration the confirmation does not tell). A response with a
// non-zero response code returns the Result and an error wrapping the
// dpa.ResponseCode.
func (c *Coordinator) Do(ctx context.Context, req dpa.Frame, timeout time.Duration) (*Result, error) {
	req.Kind = dpa.KindRequest
	if err := req.Validate(); err != nil {
		return nil, err
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, c.err
	}
	defer func() { <-c.sem }()
	c.stats.Transactions.Add(1)
	wire := req.Append(nil)
	var err error
	for attempt := 0; attempt <= c.cfg.Retries; attempt++ {
		if attempt > 0 {
			c.stats.Retries.Add(1)
			c.log.Debug("retrying", logkey.Node, req.NADR, logkey.PNUM, req.PNUM, logkey.PCMD, req.PCMD, logkey.Attempt, attempt, logkey.Err, err)
		}
		var res *Result
		res, err = c.attemptLocked(ctx, &req, wire, timeout)
		if err == nil {
			if res.Frame.ErrN != dpa.StatusNoError {
				return res, fmt.Errorf("node %d pnum 0x%02x pcmd 0x%02x: %w", req.NADR, req.PNUM, req.PCMD, res.Frame.ErrN)
			}
			return res, nil
		}
		if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrReset) {
			return nil, err
		}
	}
	if errors.Is(err, ErrTimeout) {
		c.stats.Timeouts.Add(1)
	}
	return nil, err
}

func (c *Coordinator) waitFree(ctx context.Context) error {
	d := time.Until(c.nextSend)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.err
	}
}

func (c *Coordinator) attemptLocked(ctx context.Context, req *dpa.Frame, wire []byte, timeout time.Duration) (*Result, error) {
	if err := c.waitFree(ctx); err != nil {
		return nil, err
	}
	// Answers that came too late for an earlier transaction are stale now.
	for drained := false; !drained; {
		select {
		case m := <-c.rx:
			c.stats.Stray.Add(1)
			c.log.Debug("late answer dropped", logkey.Frame, dpa.DottedHex(m))
		case <-c.reset:
		default:
			drained = true
		}
	}
	res := &Result{Request: wire}
	remote := req.NADR != dpa.AddrCoordinator && req.NADR != dpa.AddrLocal
	if err := c.link.WriteFrame(wire); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	res.RequestTime = time.Now()
	stage := "response"
	deadline := res.RequestTime.Add(c.cfg.LocalTimeout)
	if remote {
		stage = "confirmation"
		deadline = res.RequestTime.Add(c.cfg.ConfirmTimeout)
	}
	if !remote && timeout > 0 {
		deadline = res.RequestTime.Add(timeout)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var f dpa.Frame
	for {
		select {
		case <-ctx.Done():
			c.nextSend = time.Now().Add(dpa.DefaultTimeout)
			return nil, ctx.Err()
		case <-c.done:
			return nil, c.err
		case <-c.reset:
			c.nextSend = time.Now()
			return nil, fmt.Errorf("node %d pnum 0x%02x pcmd 0x%02x: %w", req.NADR, req.PNUM, req.PCMD, ErrReset)
		case <-timer.C:
			// Leave the network time to finish whatever it was doing.
			c.nextSend = time.Now()
			return nil, fmt.Errorf("node %d pnum 0x%02x pcmd 0x%02x: %s: %w", req.NADR, req.PNUM, req.PCMD, stage, ErrTimeout)
		case m := <-c.rx:
			now := time.Now()
			if err := f.Decode(m); err != nil || !req.Matches(&f) {
				c.stats.Stray.Add(1)
				c.log.Debug("answer for another request dropped", logkey.Frame, dpa.DottedHex(m))
				continue
			}
			switch f.Kind {
			case dpa.KindConfirmation:
				if res.Confirmation != nil || !remote {
					c.stats.Stray.Add(1)
					continue
				}
				res.Confirmation, res.ConfirmTime = m, now
				if err := res.Conf.Decode(m); err != nil {
					return nil, err
				}
				if req.NADR == dpa.AddrBroadcast {
					c.nextSend = res.Conf.RoutingDone(now, 0)
					return res, nil
				}
				stage = "response"
				d := res.Conf.ResponseTimeout()
				if timeout > d {
					d = timeout
				}
				timer.Reset(time.Until(now.Add(d)))
			case dpa.KindResponse:
				res.Response, res.ResponseTime = m, now
				if err := res.Frame.Decode(m); err != nil {
					return nil, err
				}
				if res.Confirmation != nil {
					c.nextSend = res.Conf.RoutingDone(res.ConfirmTime, len(res.Frame.PData))
				} else {
					c.nextSend = now
				}
				return res, nil
			}
		}
	}
}
