package cdc

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
)

func parseAll(p *Parser, b []byte) (msgs []Message, errs []error) {
	for _, c := range b {
		m, ok, err := p.Push(c)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			msgs = append(msgs, Message{Data: bytes.Clone(m.Data), Reply: bytes.Clone(m.Reply)})
		}
	}
	return msgs, errs
}

func TestCommands(t *testing.T) {
	req := []byte{0x01, 0x00, 0x5e, 0x01, 0xff, 0xff, 0x03, 0x00, 0x00, 0x00}
	got := AppendSend(nil, req)
	want := append([]byte{'>', 'D', 'S', 10, ':'}, req...)
	want = append(want, '\r')
	if !bytes.Equal(got, want) {
		t.Errorf("send % x", got)
	}
	// The host side sees replies and data; data may contain CR and '<'.
	resp := []byte{0x01, 0x00, 0x5e, 0x81, 0x02, 0x14, 0x00, 0x51, 0x01, 0x0d, 0x3c, 0x02, 0x87, 0x09}
	var stream []byte
	stream = append(stream, "<DS:OK\r"...)
	stream = append(stream, "noise"...)
	stream = AppendReceived(stream, resp)
	stream = append(stream, "<OK\r"...)
	var p Parser
	msgs, errs := parseAll(&p, stream)
	if len(errs) != 0 || len(msgs) != 3 {
		t.Fatalf("msgs %q errs %v", msgs, errs)
	}
	if string(msgs[0].Reply) != "DS:OK" || !bytes.Equal(msgs[1].Data, resp) || string(msgs[2].Reply) != "OK" {
		t.Errorf("parsed %q", msgs)
	}
	// The module side parses the host's commands.
	hp := Parser{Prefix: '>'}
	msgs, _ = parseAll(&hp, append(AppendSend(nil, req), ">\r"...))
	if len(msgs) != 2 || !bytes.Equal(msgs[0].Data, req) || len(msgs[1].Reply) != 0 {
		t.Errorf("host commands %q", msgs)
	}
}

func TestBadMessages(t *testing.T) {
	var p Parser
	for _, bad := range [][]byte{
		{'<', 'D', 'R', 0, ':', '\r'},                         // zero length
		{'<', 'D', 'R', 2, '-', 1, 2, '\r'},                   // no colon
		{'<', 'D', 'R', 2, ':', 1, 2, 'x'},                    // no CR after the data
		append([]byte("<"), bytes.Repeat([]byte{'a'}, 80)...), // too long
	} {
		_, errs := parseAll(&p, bad)
		if len(errs) != 1 || !errors.Is(errs[0], dpa.ErrMalformed) {
			t.Errorf("% x: %v", bad, errs)
		}
	}
	// After errors, a good message still parses.
	msgs, errs := parseAll(&p, AppendReceived(nil, []byte{1, 2, 3, 4, 5, 6, 7, 8}))
	if len(errs) != 0 || len(msgs) != 1 {
		t.Errorf("after errors: %q %v", msgs, errs)
	}
}

func FuzzParser(f *testing.F) {
	f.Add(AppendReceived([]byte("<DS:OK\r"), []byte{1, 0, 0x5e, 0x81, 0, 0, 0, 0}))
	f.Add(AppendSend(nil, []byte{1, 0, 0x5e, 1, 0xff, 0xff}))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, prefix := range []byte{'<', '>'} {
			p := Parser{Prefix: prefix}
			for _, c := range b {
				m, ok, err := p.Push(c)
				if err != nil && !errors.Is(err, dpa.ErrMalformed) {
					t.Fatal(err)
				}
				if ok && m.Data != nil && (len(m.Data) == 0 || len(m.Data) > MaxData) {
					t.Fatalf("data of %d bytes", len(m.Data))
				}
			}
		}
	})
}

// fakeModule answers ">DS" with the replies given, in order, and records
// what it was sent.
type fakeModule struct {
	mu      sync.Mutex
	replies []string
	sent    int
	toHost  *io.PipeWriter
	fromDev *io.PipeReader
}

func (m *fakeModule) Read(p []byte) (int, error) { return m.fromDev.Read(p) }
func (m *fakeModule) Write(p []byte) (int, error) {
	m.mu.Lock()
	reply := "<DS:OK\r"
	if m.sent < len(m.replies) {
		reply = m.replies[m.sent]
	}
	m.sent++
	m.mu.Unlock()
	go m.toHost.Write([]byte(reply))
	return len(p), nil
}
func (m *fakeModule) Close() error { m.toHost.Close(); return nil }

func TestWriteFrameResendsWhileBusy(t *testing.T) {
	r, w := io.Pipe()
	dev := &fakeModule{replies: []string{"<DS:BUSY\r", "<DS:BUSY\r", "<DS:OK\r", "<DS:ERR\r"}, toHost: w, fromDev: r}
	l := NewLink(dev)
	l.ReplyTimeout = time.Second
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := l.ReadFrame(buf); err != nil && !errors.Is(err, dpa.ErrMalformed) {
				return
			}
		}
	}()
	defer l.Close()
	if err := l.WriteFrame([]byte{0, 0, 0, 2, 0xff, 0xff}); err != nil {
		t.Fatalf("after BUSY: %v", err)
	}
	dev.mu.Lock()
	sent := dev.sent
	dev.mu.Unlock()
	if sent != 3 {
		t.Errorf("sent %d times, want 3", sent)
	}
	if err := l.WriteFrame([]byte{0, 0, 0, 2, 0xff, 0xff}); !errors.Is(err, ErrRejected) {
		t.Errorf("ERR reply: %v", err)
	}
}
