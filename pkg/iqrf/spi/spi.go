// Package spi is the IQRF SPI protocol between a host (SPI master) and a TR
// module (slave) as clibspi implements it: a status byte read with
// SPI_CHECK, and data packets F0 | PTYPE | data | CRCM, the slave returning
// its data and CRCS in the same full-duplex transfer.
package spi

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
)

// Protocol constants (clibspi spi_iqrf.h).
const (
	Check       = 0x00 // SPI_CHECK
	CmdData     = 0xF0
	PTypeWrite  = 0x80 // bit 7 of PTYPE: master writes ("buffer changed")
	MaxData     = 128  // SPI_IQRF_MAX_DATA_LENGTH
	DefaultPath = "/dev/spidev0.0"

	StatusDisabled       = 0x00
	StatusSuspended      = 0x07
	StatusBufferProtect  = 0x3F
	StatusCRCMError      = 0x3E
	StatusReadyComm      = 0x80
	StatusReadyProg      = 0x81
	StatusReadyDebug     = 0x82
	StatusSlowMode       = 0x83
	StatusHWError        = 0xFF
	statusDataReadyFirst = 0x40
	statusDataReadyLast  = 0x7F
)

// ErrCRC: the slave's CRCS did not match (wraps dpa.ErrMalformed).
var ErrCRC = fmt.Errorf("spi: CRCS mismatch: %w", dpa.ErrMalformed)

// DataReady returns the number of bytes the slave has for the master, or 0
// when the status is not "data ready" (0x40 means 64).
func DataReady(status byte) int {
	if status < statusDataReadyFirst || status > statusDataReadyLast {
		return 0
	}
	n := int(status - statusDataReadyFirst)
	if n == 0 {
		n = 64
	}
	return n
}

// crcm is the master's packet checksum over PTYPE and the data.
func crcm(ptype byte, data []byte) byte {
	c := byte(0x5F ^ CmdData ^ ptype)
	for _, b := range data {
		c ^= b
	}
	return c
}

// CRCS is the slave's checksum over PTYPE and the data it returns.
func CRCS(ptype byte, data []byte) byte {
	c := byte(0x5F ^ ptype)
	for _, b := range data {
		c ^= b
	}
	return c
}

// WritePacket is the transfer that writes p to the slave.
func WritePacket(p []byte) ([]byte, error) {
	if len(p) == 0 || len(p) > MaxData {
		return nil, fmt.Errorf("spi: cannot write %d bytes", len(p))
	}
	ptype := byte(len(p)) | PTypeWrite
	tx := append([]byte{CmdData, ptype}, p...)
	return append(tx, crcm(ptype, p)), nil
}

// ReadPacket is the transfer that reads n bytes from the slave.
func ReadPacket(n int) ([]byte, error) {
	if n <= 0 || n > MaxData {
		return nil, fmt.Errorf("spi: cannot read %d bytes", n)
	}
	ptype := byte(n)
	tx := make([]byte, n+3)
	tx[0], tx[1] = CmdData, ptype
	tx[n+2] = crcm(ptype, tx[2:n+2])
	return tx, nil
}

// ParseRead checks the slave's answer to ReadPacket(n) and returns its data
// (aliasing rx).
func ParseRead(rx []byte, n int) ([]byte, error) {
	if n <= 0 || n > MaxData || len(rx) != n+3 {
		return nil, fmt.Errorf("spi: %d bytes received for a %d-byte read: %w", len(rx), n, dpa.ErrMalformed)
	}
	data := rx[2 : n+2]
	if rx[n+2] != CRCS(byte(n), data) {
		return nil, ErrCRC
	}
	return data, nil
}

// Transferer does one full-duplex SPI transfer (rx has the length of tx).
type Transferer interface {
	Transfer(tx, rx []byte) error
	Close() error
}

// Link carries DPA messages over the IQRF SPI protocol.
type Link struct {
	dev Transferer
	// PollInterval is the wait between status reads while the slave has
	// nothing (the protocol has no interrupt line here; default 5 ms).
	PollInterval time.Duration
	// ReadyTimeout bounds the wait for the slave to accept a write
	// (default 1 s).
	ReadyTimeout time.Duration

	bus    sync.Mutex // one transfer at a time
	closed chan struct{}
	once   sync.Once
}

// NewLink speaks the protocol through dev.
func NewLink(dev Transferer) *Link {
	return &Link{dev: dev, PollInterval: 5 * time.Millisecond, ReadyTimeout: time.Second, closed: make(chan struct{})}
}

// status reads the status byte twice and returns it when both agree.
func (l *Link) status() (byte, error) {
	var rx [1]byte
	var prev int = -1
	for range 4 {
		if err := l.dev.Transfer([]byte{Check}, rx[:]); err != nil {
			return 0, fmt.Errorf("spi: status: %w", err)
		}
		if int(rx[0]) == prev {
			return rx[0], nil
		}
		prev = int(rx[0])
	}
	return 0, fmt.Errorf("spi: unstable status byte: %w", dpa.ErrMalformed)
}

var errClosed = errors.New("spi: link closed")

// WriteFrame waits until the slave is ready and writes p.
func (l *Link) WriteFrame(p []byte) error {
	tx, err := WritePacket(p)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(l.ReadyTimeout)
	for {
		l.bus.Lock()
		st, err := l.status()
		if err == nil && st == StatusReadyComm {
			rx := make([]byte, len(tx))
			err = l.dev.Transfer(tx, rx)
			l.bus.Unlock()
			return err
		}
		l.bus.Unlock()
		if err != nil && !errors.Is(err, dpa.ErrMalformed) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("spi: slave not ready (status 0x%02x) within %v", st, l.ReadyTimeout)
		}
		if err := l.sleep(); err != nil {
			return err
		}
	}
}

func (l *Link) sleep() error {
	t := time.NewTimer(l.PollInterval)
	defer t.Stop()
	select {
	case <-l.closed:
		return errClosed
	case <-t.C:
		return nil
	}
}

// ReadFrame polls the status until the slave has data, then reads it.
func (l *Link) ReadFrame(p []byte) (int, error) {
	for {
		l.bus.Lock()
		st, err := l.status()
		if err != nil {
			l.bus.Unlock()
			return 0, err
		}
		if n := DataReady(st); n > 0 {
			tx, _ := ReadPacket(n)
			rx := make([]byte, len(tx))
			err := l.dev.Transfer(tx, rx)
			l.bus.Unlock()
			if err != nil {
				return 0, fmt.Errorf("spi: read: %w", err)
			}
			data, err := ParseRead(rx, n)
			if err != nil {
				return 0, err
			}
			if len(data) > len(p) {
				return 0, fmt.Errorf("spi: %d-byte message for a %d-byte buffer: %w", len(data), len(p), dpa.ErrMalformed)
			}
			return copy(p, data), nil
		}
		l.bus.Unlock()
		if st == StatusHWError {
			return 0, errors.New("spi: TR module reports a hardware error")
		}
		if err := l.sleep(); err != nil {
			return 0, err
		}
	}
}

// Close stops polling and closes the device.
func (l *Link) Close() error {
	var err error
	l.once.Do(func() {
		close(l.closed)
		l.bus.Lock()
		err = l.dev.Close()
		l.bus.Unlock()
	})
	return err
}
