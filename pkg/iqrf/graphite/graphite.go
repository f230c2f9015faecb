// Package graphite sends readings from the on-disk queue to carbon with the
// plaintext protocol, one line per reading:
//
//	<prefix>.node<address>.<metric> <value> <unix time of the reading>
//
// What the plaintext protocol can confirm: nothing. Carbon never writes on
// the connection; there is no acknowledgement, no error, no way to learn
// whether a line was parsed, cached or written to a whisper file (carbon-cache
// keeps points in memory before writing them, for a second or, under load,
// much longer, and drops that cache when it is stopped). A successful write(2)
// says only that the bytes are in our own socket buffer.
//
// What the sink uses instead, the strongest evidence TCP gives: a batch is
// released from the queue when carbon's TCP stack has acknowledged every byte
// (the socket's unacknowledged send queue, SIOCOUTQ, is empty: the bytes
// reached carbon's host) and the connection then stayed up for ConfirmAfter
// (carbon did not crash or close it meanwhile). That is counted as
// TCPAcknowledged, never as "stored": a carbon that dies later, or drops a
// line it cannot parse, is not seen. When the connection drops first,
// everything not yet released is sent again after reconnecting. Resending a
// point is harmless: carbon stores the same value at the same timestamp. The
// only proof of storage is reading the point back (the tests do, with
// whisper-fetch).
package graphite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/pkg/iqrf/collector"
	"github.com/iotfabric/iotfabric/pkg/iqrf/queue"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// Stats counts what the sink did. Fields are updated atomically.
type Stats struct {
	// Sent counts lines written to carbon whose bytes carbon's TCP stack
	// acknowledged (resends included).
	Sent atomic.Uint64
	// TCPAcknowledged counts readings released from the queue: acknowledged
	// by carbon's TCP stack, and the connection stayed up for ConfirmAfter
	// afterwards. Each reading once. Not proof that carbon stored them (see
	// the package comment).
	TCPAcknowledged atomic.Uint64
	Connects        atomic.Uint64
	Errors          atomic.Uint64 // failed dials and lost connections
	BadRecords      atomic.Uint64
	Connected       atomic.Bool
}

// Config configures the sink.
type Config struct {
	// Addr is carbon's plaintext receiver, host:port.
	Addr string
	// Prefix starts every metric path, e.g. "iotfabric.site1".
	Prefix string
	Reader *queue.Reader
	// ConfirmAfter: see the package comment (default 2 s).
	ConfirmAfter time.Duration
	// Batch is the most lines written at once (default 500).
	Batch int
	// MinBackoff and MaxBackoff bound the wait between dial attempts
	// (default 200 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// OnAccepted, if set, is called for every line once carbon's TCP stack
	// has acknowledged it.
	OnAccepted func(r collector.Reading, at time.Time)
	Logger     *slog.Logger
	Stats      *Stats
}

// Line formats one reading as a plaintext-protocol line.
func Line(dst []byte, prefix string, r collector.Reading) []byte {
	if prefix != "" {
		dst = append(dst, prefix...)
		dst = append(dst, '.')
	}
	dst = append(dst, "node"...)
	dst = strconv.AppendUint(dst, uint64(r.Node), 10)
	dst = append(dst, '.')
	dst = append(dst, r.Metric...)
	dst = append(dst, ' ')
	dst = strconv.AppendFloat(dst, r.Value, 'f', -1, 64)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, r.Time.Unix(), 10)
	return append(dst, '\n')
}

// Run delivers until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ConfirmAfter <= 0 {
		cfg.ConfirmAfter = 2 * time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = &Stats{}
	}
	backoff := cfg.MinBackoff
	for ctx.Err() == nil {
		err := session(ctx, &cfg)
		cfg.Stats.Connected.Store(false)
		cfg.Reader.Rewind()
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			cfg.Stats.Errors.Add(1)
			cfg.Logger.Warn("graphite delivery interrupted", logkey.Addr, cfg.Addr, logkey.Err, err, logkey.RetryIn, backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		if errors.Is(err, errDial) {
			backoff = min(backoff*2, cfg.MaxBackoff)
		} else {
			backoff = cfg.MinBackoff
		}
	}
	return nil
}

var errDial = errors.New("dial")

type sent struct {
	end uint64
	n   uint64
	at  time.Time
}

func session(ctx context.Context, cfg *Config) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("%w: %w", errDial, err)
	}
	conn := c.(*net.TCPConn)
	defer conn.Close()
	cfg.Stats.Connects.Add(1)
	cfg.Stats.Connected.Store(true)
	cfg.Logger.Info("connected to carbon", logkey.Addr, cfg.Addr)
	connCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		// Carbon never writes: a read returns only when the connection
		// closes.
		var b [64]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				cancel(fmt.Errorf("connection closed by carbon: %w", err))
				return
			}
		}
	}()
	var pending []sent
	var buf []byte
	for {
		now := time.Now()
		for len(pending) > 0 && now.Sub(pending[0].at) >= cfg.ConfirmAfter {
			// Counted first: whoever sees the queue drained sees them
			// counted.
			cfg.Stats.TCPAcknowledged.Add(pending[0].n)
			cfg.Reader.Ack(pending[0].end)
			pending = pending[1:]
		}
		waitCtx := connCtx
		var waitCancel context.CancelFunc = func() {}
		if len(pending) > 0 {
			waitCtx, waitCancel = context.WithDeadline(connCtx, pending[0].at.Add(cfg.ConfirmAfter))
		}
		recs, first, err := cfg.Reader.Next(waitCtx, cfg.Batch)
		waitCancel()
		if err != nil {
			if connCtx.Err() != nil {
				return context.Cause(connCtx)
			}
			if errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return err
		}
		buf = buf[:0]
		readings := make([]collector.Reading, 0, len(recs))
		for _, rec := range recs {
			r, err := collector.DecodeRecord(rec)
			if err != nil {
				cfg.Stats.BadRecords.Add(1)
				cfg.Logger.Error("undecodable record in the queue", logkey.Err, err)
				continue
			}
			readings = append(readings, r)
			buf = Line(buf, cfg.Prefix, r)
		}
		if len(buf) > 0 {
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(buf); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			if err := waitAcked(connCtx, conn, 5*time.Second); err != nil {
				return err
			}
		}
		at := time.Now()
		cfg.Stats.Sent.Add(uint64(len(readings)))
		if cfg.OnAccepted != nil {
			for _, r := range readings {
				cfg.OnAccepted(r, at)
			}
		}
		pending = append(pending, sent{end: first + uint64(len(recs)), n: uint64(len(recs)), at: at})
	}
}

// waitAcked waits until the peer's TCP stack has acknowledged everything
// written (the socket's unacknowledged send queue, SIOCOUTQ, is empty).
// There is no event for this, so it polls with a short, growing interval.
func waitAcked(ctx context.Context, conn *net.TCPConn, limit time.Duration) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	wait := 20 * time.Microsecond
	for {
		var outq int
		var ierr error
		if err := rc.Control(func(fd uintptr) { outq, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
			return err
		}
		if ierr != nil {
			return fmt.Errorf("SIOCOUTQ: %w", ierr)
		}
		if outq == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("carbon did not acknowledge %d bytes within %v", outq, limit)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
		wait = min(wait*2, 2*time.Millisecond)
	}
}
