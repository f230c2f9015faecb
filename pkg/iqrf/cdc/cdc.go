// Package cdc is the link layer of IQRF USB devices running the CDC IQRF
// firmware (GW-USB, CK-USB): ASCII commands such as ">DS" carry DPA
// messages to the module and "<DR" messages bring them back.
package cdc

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.bug.st/serial"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
)

// DefaultDevice is where the kernel's cdc_acm driver puts the first device.
const DefaultDevice = "/dev/ttyACM0"

// MaxData is the longest DPA message the module accepts.
const MaxData = 64

// ErrMessage is wrapped by errors about CDC messages that cannot be parsed.
var ErrMessage = fmt.Errorf("cdc: bad message: %w", dpa.ErrMalformed)

// Errors of ">DS".
var (
	ErrBusy     = errors.New("cdc: module busy")
	ErrRejected = errors.New("cdc: module rejected the data")
	ErrNoReply  = errors.New("cdc: no reply to >DS")
)

// AppendSend appends the ">DS" command carrying the DPA message p.
func AppendSend(dst, p []byte) []byte {
	dst = append(dst, '>', 'D', 'S', byte(len(p)), ':')
	dst = append(dst, p...)
	return append(dst, '\r')
}

// AppendReceived appends the "<DR" message a module sends for DPA message p.
func AppendReceived(dst, p []byte) []byte {
	dst = append(dst, '<', 'D', 'R', byte(len(p)), ':')
	dst = append(dst, p...)
	return append(dst, '\r')
}

// Message is one parsed message from the module.
type Message struct {
	// Data is set for "<DR": the DPA message.
	Data []byte
	// Reply is the text of any other message without '<' and CR, e.g.
	// "DS:OK", "OK", "R:OK".
	Reply []byte
}

// Parser splits the byte stream from the module (or, with Prefix '>', from
// the host) into messages. It does not allocate; parsed data is valid until
// the next call.
type Parser struct {
	// Prefix is '<' (default) for module-to-host messages, '>' for
	// host-to-module commands.
	Prefix byte
	buf    [MaxData + 8]byte
	n      int
	in     bool
}

// Push consumes one byte; it returns a message when one is complete.
func (p *Parser) Push(c byte) (Message, bool, error) {
	prefix := p.Prefix
	if prefix == 0 {
		prefix = '<'
	}
	if !p.in {
		if c == prefix {
			p.in, p.n = true, 0
		}
		return Message{}, false, nil
	}
	if p.n == len(p.buf) {
		p.in = false
		return Message{}, false, fmt.Errorf("cdc: message longer than %d bytes: %w", len(p.buf), ErrMessage)
	}
	p.buf[p.n] = c
	p.n++
	b := p.buf[:p.n]
	if len(b) >= 2 && (b[0] == 'D' && (b[1] == 'R' && prefix == '<' || b[1] == 'S' && prefix == '>')) {
		if len(b) < 4 {
			return Message{}, false, nil
		}
		n := int(b[2])
		if b[3] != ':' || n == 0 || n > MaxData {
			p.in = false
			return Message{}, false, fmt.Errorf("cdc: data header % x: %w", b[:4], ErrMessage)
		}
		if len(b) < 4+n+1 {
			return Message{}, false, nil
		}
		p.in = false
		if b[4+n] != '\r' {
			return Message{}, false, fmt.Errorf("cdc: data message not ended by CR: %w", ErrMessage)
		}
		return Message{Data: b[4 : 4+n]}, true, nil
	}
	if c == '\r' {
		p.in = false
		return Message{Reply: b[:len(b)-1]}, true, nil
	}
	return Message{}, false, nil
}

// Link carries DPA messages to a CDC device.
type Link struct {
	rw      io.ReadWriteCloser
	replies chan string
	// ReplyTimeout bounds the wait for "<DS:...". Default 1 s.
	ReplyTimeout time.Duration

	wmu  sync.Mutex // serialises commands
	wbuf []byte

	rmu    sync.Mutex // guards the read side
	parser Parser
	rbuf   [256]byte
	rpos   int
	rlen   int
}

// NewLink speaks the CDC protocol over rw.
func NewLink(rw io.ReadWriteCloser) *Link {
	return &Link{rw: rw, replies: make(chan string, 4), ReplyTimeout: time.Second}
}

// Open opens a CDC device such as /dev/ttyACM0.
func Open(path string) (*Link, error) {
	p, err := serial.Open(path, &serial.Mode{BaudRate: 115200, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("cdc: open %s: %w", path, err)
	}
	return NewLink(p), nil
}

// WriteFrame sends p with ">DS" and waits for the module to accept it,
// sending again while it answers BUSY. It needs ReadFrame running (the
// reply arrives on the read side).
func (l *Link) WriteFrame(p []byte) error {
	if len(p) == 0 || len(p) > MaxData {
		return fmt.Errorf("cdc: cannot send a %d-byte message", len(p))
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.wbuf = AppendSend(l.wbuf[:0], p)
	for try := 0; ; try++ {
		if _, err := l.rw.Write(l.wbuf); err != nil {
			return fmt.Errorf("cdc: write: %w", err)
		}
		t := time.NewTimer(l.ReplyTimeout)
		var reply string
		select {
		case reply = <-l.replies:
		case <-t.C:
		}
		t.Stop()
		switch reply {
		case "DS:OK":
			return nil
		case "DS:BUSY":
			if try < 10 {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return ErrBusy
		case "":
			return ErrNoReply
		default:
			return fmt.Errorf("%w: %q", ErrRejected, reply)
		}
	}
}

// ReadFrame returns the next DPA message the module sends ("<DR").
func (l *Link) ReadFrame(p []byte) (int, error) {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	for {
		for l.rpos < l.rlen {
			c := l.rbuf[l.rpos]
			l.rpos++
			m, ok, err := l.parser.Push(c)
			if err != nil {
				return 0, err
			}
			if !ok {
				continue
			}
			if m.Data == nil {
				if len(m.Reply) > 3 && string(m.Reply[:3]) == "DS:" {
					select {
					case l.replies <- string(m.Reply):
					default:
					}
				}
				continue
			}
			if len(m.Data) > len(p) {
				return 0, fmt.Errorf("cdc: %d-byte message for a %d-byte buffer: %w", len(m.Data), len(p), ErrMessage)
			}
			return copy(p, m.Data), nil
		}
		n, err := l.rw.Read(l.rbuf[:])
		if err != nil {
			var pe *serial.PortError
			if errors.As(err, &pe) && pe.Code() == serial.PortClosed {
				return 0, fmt.Errorf("cdc: %w", io.ErrClosedPipe)
			}
			return 0, fmt.Errorf("cdc: read: %w", err)
		}
		l.rpos, l.rlen = 0, n
	}
}

// Close closes the device.
func (l *Link) Close() error { return l.rw.Close() }
