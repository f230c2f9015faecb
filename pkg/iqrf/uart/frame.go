package uart

import (
	"errors"
	"fmt"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
)

const (
	flag   = 0x7E
	escape = 0x7D
	xor    = 0x20
	// MaxData is the longest DPA message the coordinator's 64-byte buffers
	// hold.
	MaxData = 64
)

// Link-layer errors; all wrap dpa.ErrMalformed.
var (
	ErrCRC     = fmt.Errorf("uart: CRC mismatch: %w", dpa.ErrMalformed)
	ErrTooLong = fmt.Errorf("uart: frame longer than %d bytes: %w", MaxData, dpa.ErrMalformed)
	ErrEscape  = fmt.Errorf("uart: escape byte before a flag: %w", dpa.ErrMalformed)
	ErrEmpty   = fmt.Errorf("uart: frame without data: %w", dpa.ErrMalformed)
)

// AppendFrame appends the wire form of the DPA message p to dst: flag, the
// escaped message, the escaped CRC, flag.
func AppendFrame(dst, p []byte) []byte {
	dst = append(dst, flag)
	for _, c := range p {
		dst = appendEscaped(dst, c)
	}
	dst = appendEscaped(dst, CRC8(CRCInit, p))
	return append(dst, flag)
}

func appendEscaped(dst []byte, c byte) []byte {
	if c == flag || c == escape {
		return append(dst, escape, c^xor)
	}
	return append(dst, c)
}

// Deframer recovers DPA messages from the received byte stream. It keeps
// no reference to its input and never allocates.
type Deframer struct {
	buf     [MaxData + 1]byte // data and CRC
	n       int
	crc     byte
	inFrame bool
	esc     bool
	skip    bool // after an error, drop bytes until the next flag
}

// Push consumes one received byte. When it completes a valid frame it
// returns the DPA message (valid until the next call) and true. A completed
// but invalid frame gives an error wrapping dpa.ErrMalformed; the deframer
// has already resynchronised and the next frame decodes normally.
func (d *Deframer) Push(c byte) ([]byte, bool, error) {
	if c == flag {
		wasEsc, n, skip := d.esc, d.n, d.skip
		crc := d.crc
		d.inFrame, d.esc, d.skip, d.n, d.crc = true, false, false, 0, CRCInit
		switch {
		case skip:
			return nil, false, nil
		case wasEsc:
			return nil, false, ErrEscape
		case n == 0:
			// Opening flag, or back-to-back flags.
			return nil, false, nil
		case n == 1:
			return nil, false, ErrEmpty
		case crc != 0:
			return nil, false, ErrCRC
		}
		return d.buf[:n-1], true, nil
	}
	if !d.inFrame || d.skip {
		return nil, false, nil
	}
	if c == escape {
		if d.esc {
			d.skip = true
			return nil, false, ErrEscape
		}
		d.esc = true
		return nil, false, nil
	}
	if d.esc {
		c ^= xor
		d.esc = false
	}
	if d.n == len(d.buf) {
		d.skip = true
		return nil, false, ErrTooLong
	}
	d.buf[d.n] = c
	d.n++
	d.crc = crcTable[d.crc^c]
	return nil, false, nil
}

// Reset drops any partial frame and waits for the next flag.
func (d *Deframer) Reset() { *d = Deframer{} }

// IsLinkError reports whether err is a framing error of this package.
func IsLinkError(err error) bool {
	return errors.Is(err, ErrCRC) || errors.Is(err, ErrTooLong) || errors.Is(err, ErrEscape) || errors.Is(err, ErrEmpty)
}
