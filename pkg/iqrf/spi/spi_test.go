package spi

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
)

func TestPackets(t *testing.T) {
	// Request "bonded nodes" 00 00 00 02 ff ff.
	tx, err := WritePacket([]byte{0, 0, 0, 2, 0xff, 0xff})
	if err != nil {
		t.Fatal(err)
	}
	// CRCM = 5F ^ F0 ^ 86 ^ 00 ^ 00 ^ 00 ^ 02 ^ FF ^ FF = 0x2B
	if want := []byte{0xf0, 0x86, 0, 0, 0, 2, 0xff, 0xff, 0x2b}; !bytes.Equal(tx, want) {
		t.Errorf("write packet % x, want % x", tx, want)
	}
	rd, _ := ReadPacket(3)
	if want := []byte{0xf0, 0x03, 0, 0, 0, 0x5f ^ 0xf0 ^ 0x03}; !bytes.Equal(rd, want) {
		t.Errorf("read packet % x, want % x", rd, want)
	}
	rx := []byte{0xff, 0xff, 1, 2, 3, 0x5f ^ 0x03 ^ 1 ^ 2 ^ 3}
	if data, err := ParseRead(rx, 3); err != nil || !bytes.Equal(data, []byte{1, 2, 3}) {
		t.Errorf("parse % x %v", data, err)
	}
	rx[5] ^= 1
	if _, err := ParseRead(rx, 3); !errors.Is(err, ErrCRC) || !errors.Is(err, dpa.ErrMalformed) {
		t.Errorf("bad CRCS: %v", err)
	}
	for st, n := range map[byte]int{0x40: 64, 0x41: 1, 0x7f: 63, 0x80: 0, 0x3f: 0, 0x00: 0} {
		if DataReady(st) != n {
			t.Errorf("DataReady(%#x) = %d, want %d", st, DataReady(st), n)
		}
	}
	if _, err := WritePacket(make([]byte, 129)); err == nil {
		t.Error("129-byte write accepted")
	}
}

// fakeTR is the slave side of the protocol: it answers every request it
// receives with a canned response.
type fakeTR struct {
	mu      sync.Mutex
	got     [][]byte
	outbox  [][]byte
	answer  func(req []byte) []byte
	corrupt bool
}

func (f *fakeTR) Transfer(tx, rx []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(tx) == 1 && tx[0] == Check {
		rx[0] = StatusReadyComm
		if len(f.outbox) > 0 {
			rx[0] = byte(0x40 + len(f.outbox[0])%64)
		}
		return nil
	}
	if tx[0] != CmdData {
		return errors.New("not a data packet")
	}
	ptype := tx[1]
	n := int(ptype &^ PTypeWrite)
	if ptype&PTypeWrite != 0 {
		data := tx[2 : 2+n]
		if tx[2+n] != crcm(ptype, data) {
			return errors.New("CRCM error")
		}
		f.got = append(f.got, append([]byte(nil), data...))
		if a := f.answer(data); a != nil {
			f.outbox = append(f.outbox, a)
		}
		return nil
	}
	msg := f.outbox[0]
	f.outbox = f.outbox[1:]
	copy(rx[2:], msg)
	rx[n+2] = CRCS(ptype, msg)
	if f.corrupt {
		rx[n+2] ^= 0xff
		f.corrupt = false
	}
	return nil
}

func (f *fakeTR) Close() error { return nil }

func TestLinkWithFakeTR(t *testing.T) {
	resp := []byte{0x00, 0x00, 0x00, 0x82, 0x00, 0x00, 0x00, 0x47, 0x0e}
	resp = append(resp, make([]byte, 31)...)
	tr := &fakeTR{answer: func(req []byte) []byte { return resp }}
	l := NewLink(tr)
	l.PollInterval = time.Millisecond
	defer l.Close()
	if err := l.WriteFrame([]byte{0, 0, 0, 2, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := l.ReadFrame(buf)
	if err != nil || !bytes.Equal(buf[:n], resp) {
		t.Fatalf("read % x, %v", buf[:n], err)
	}
	// A corrupted CRCS is reported as a malformed frame; the next one reads.
	tr.corrupt = true
	if err := l.WriteFrame([]byte{0, 0, 0, 2, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ReadFrame(buf); !errors.Is(err, dpa.ErrMalformed) {
		t.Fatalf("corrupt read: %v", err)
	}
	if err := l.WriteFrame([]byte{0, 0, 0, 2, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.ReadFrame(buf); err != nil || n != len(resp) {
		t.Fatalf("after corrupt: %d %v", n, err)
	}
	// Close unblocks a reader waiting for data.
	done := make(chan error)
	go func() { _, err := l.ReadFrame(buf); done <- err }()
	l.Close()
	if err := <-done; err == nil {
		t.Fatal("ReadFrame returned no error after Close")
	}
}

func FuzzParseRead(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 1, 2, 3, 0x5f ^ 0x03 ^ 1 ^ 2 ^ 3}, 3)
	f.Fuzz(func(t *testing.T, rx []byte, n int) {
		data, err := ParseRead(rx, n)
		if err == nil && (len(data) != n || rx[n+2] != CRCS(byte(n), data)) {
			t.Fatalf("accepted % x for n=%d", rx, n)
		}
	})
}
