package uart

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"go.bug.st/serial"
)

// DefaultBaud is the IQRF Gateway Daemon's default UART speed.
const DefaultBaud = 57600

// Link carries DPA messages over a byte stream with the UART framing.
type Link struct {
	rw io.ReadWriteCloser

	wmu  sync.Mutex // guards wbuf and writes
	wbuf []byte

	rmu  sync.Mutex // guards the read side
	def  Deframer
	rbuf [256]byte
	rpos int
	rlen int
}

// NewLink frames DPA messages over rw (a serial port, or a pseudo-terminal).
func NewLink(rw io.ReadWriteCloser) *Link { return &Link{rw: rw} }

// Open opens a serial device (8N1, no flow control) as a DPA UART link.
func Open(path string, baud int) (*Link, error) {
	if baud <= 0 {
		baud = DefaultBaud
	}
	p, err := serial.Open(path, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("uart: open %s: %w", path, err)
	}
	return NewLink(p), nil
}

// WriteFrame sends one DPA message.
func (l *Link) WriteFrame(p []byte) error {
	if len(p) == 0 || len(p) > MaxData {
		return fmt.Errorf("uart: cannot send a %d-byte message", len(p))
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.wbuf = AppendFrame(l.wbuf[:0], p)
	if _, err := l.rw.Write(l.wbuf); err != nil {
		return fmt.Errorf("uart: write: %w", err)
	}
	return nil
}

// ReadFrame blocks until one DPA message arrives and copies it into p. A
// framing error is returned as soon as it is seen (it wraps
// dpa.ErrMalformed; reading may go on); any other error means the port is
// gone.
func (l *Link) ReadFrame(p []byte) (int, error) {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	for {
		for l.rpos < l.rlen {
			c := l.rbuf[l.rpos]
			l.rpos++
			msg, ok, err := l.def.Push(c)
			if err != nil {
				return 0, err
			}
			if ok {
				if len(msg) > len(p) {
					return 0, fmt.Errorf("uart: %d-byte message for a %d-byte buffer: %w", len(msg), len(p), ErrTooLong)
				}
				return copy(p, msg), nil
			}
		}
		n, err := l.rw.Read(l.rbuf[:])
		if err != nil {
			var pe *serial.PortError
			if errors.As(err, &pe) && pe.Code() == serial.PortClosed {
				return 0, fmt.Errorf("uart: %w", io.ErrClosedPipe)
			}
			return 0, fmt.Errorf("uart: read: %w", err)
		}
		l.rpos, l.rlen = 0, n
	}
}

// Close closes the port; a blocked ReadFrame returns.
func (l *Link) Close() error { return l.rw.Close() }
