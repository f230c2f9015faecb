package uart

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
)

func hx(t testing.TB, s string) []byte {
	t.Helper()
	b, err := dpa.ParseDottedHex(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCRCCheckValue(t *testing.T) {
	if got := CRC8(CRCInit, []byte("123456789")); got != 0x0B {
		t.Errorf("CRC(123456789) = %#x, want 0x0b", got)
	}
	if got := CRC8(0, []byte("123456789")); got != 0xA1 {
		t.Errorf("CRC-8/MAXIM = %#x, want 0xa1", got)
	}
}

// Vectors from the reference: the official RAM-write vector and the derived
// ones.
var wireVectors = []struct{ name, dpa, wire string }{
	{"official RAM write", "2f 00 05 01 ff ff 00 7e 7d", "7e 2f 00 05 01 ff ff 00 7d 5e 7d 5d 7d 5e 7e"},
	{"read sensors 0,1", "01 00 5e 01 ff ff 03 00 00 00", "7e 01 00 5e 01 ff ff 03 00 00 00 91 7e"},
	{"read all sensors", "01 00 5e 01 ff ff ff ff ff ff", "7e 01 00 5e 01 ff ff ff ff ff ff 94 7e"},
	{"confirmation", "01 00 5e 01 ff ff ff 50 01 08 01", "7e 01 00 5e 01 ff ff ff 50 01 08 01 93 7e"},
	{"response", "01 00 5e 81 02 14 00 51 01 c8 01 02 87 09", "7e 01 00 5e 81 02 14 00 51 01 c8 01 02 87 09 1d 7e"},
	{"S1", "01.00.5e.81.15.10.00.58.14.6a.16.02.e8.00.80.5c.0b.1c.00.a0.00.00.00.80.81.02.15.c5.09.15.f7.ff.15.2c.00.a0.00.00.00.00.10.40.3c.13.90.01.01.5a.01.03.06.00.04.46.11",
		"7e 01.00.5e.81.15.10.00.58.14.6a.16.02.e8.00.80.5c.0b.1c.00.a0.00.00.00.80.81.02.15.c5.09.15.f7.ff.15.2c.00.a0.00.00.00.00.10.40.3c.13.90.01.01.5a.01.03.06.00.04.46.11 52 7e"},
	{"E1", "01.00.5e.be.15.10.00.58.14.02.80.0b.a0.81.15.15.15.a0.10.13.01.03.04",
		"7e 01.00.5e.be.15.10.00.58.14.02.80.0b.a0.81.15.15.15.a0.10.13.01.03.04 43 7e"},
	{"B1", "00.00.00.82.00.00.00.47.0e" + string(bytes.Repeat([]byte(".00"), 31)),
		"7e 00.00.00.82.00.00.00.47.0e" + string(bytes.Repeat([]byte(".00"), 31)) + " 9b 7e"},
}

func TestFrameVectors(t *testing.T) {
	for _, v := range wireVectors {
		t.Run(v.name, func(t *testing.T) {
			msg, wire := hx(t, v.dpa), hx(t, v.wire)
			if got := AppendFrame(nil, msg); !bytes.Equal(got, wire) {
				t.Errorf("encoded\n% x\nwant\n% x", got, wire)
			}
			var d Deframer
			var got [][]byte
			for _, c := range wire {
				m, ok, err := d.Push(c)
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					got = append(got, bytes.Clone(m))
				}
			}
			if len(got) != 1 || !bytes.Equal(got[0], msg) {
				t.Errorf("decoded %x, want %x", got, msg)
			}
		})
	}
}

func pushAll(d *Deframer, wire []byte) (msgs [][]byte, errs []error) {
	for _, c := range wire {
		m, ok, err := d.Push(c)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			msgs = append(msgs, bytes.Clone(m))
		}
	}
	return msgs, errs
}

func TestDeframerResynchronises(t *testing.T) {
	good := AppendFrame(nil, hx(t, "01 00 5e 01 ff ff ff 50 01 08 01"))
	bad := bytes.Clone(good)
	bad[3] ^= 0x01 // corrupt a data byte: CRC error
	long := append([]byte{flag}, bytes.Repeat([]byte{0x11}, 80)...)
	long = append(long, flag)
	var stream []byte
	stream = append(stream, 0x33, 0x44) // line noise before any flag
	stream = append(stream, good...)
	stream = append(stream, bad...)
	stream = append(stream, good...)
	stream = append(stream, long...)
	stream = append(stream, flag, escape, flag) // escape right before a flag
	stream = append(stream, 0x55, flag)         // 1-byte frame: only a "CRC"
	stream = append(stream, good...)
	stream = append(stream, good[:6]...) // truncated, never closed
	var d Deframer
	msgs, errs := pushAll(&d, stream)
	if len(msgs) != 3 {
		t.Errorf("got %d good frames, want 3", len(msgs))
	}
	want := []error{ErrCRC, ErrTooLong, ErrEscape, ErrEmpty}
	if len(errs) != len(want) {
		t.Fatalf("errors %v, want %v", errs, want)
	}
	for i := range want {
		if !errors.Is(errs[i], want[i]) || !errors.Is(errs[i], dpa.ErrMalformed) {
			t.Errorf("error %d = %v, want %v", i, errs[i], want[i])
		}
	}
}

type pipeRW struct {
	io.Reader
	io.Writer
}

func (pipeRW) Close() error { return nil }

func TestLinkReadWrite(t *testing.T) {
	var out bytes.Buffer
	in := bytes.NewReader(append(AppendFrame(nil, []byte{1, 2, 3, 4, 5, 6, 7, 8}), AppendFrame(nil, []byte{0x7e, 0x7d, 3, 4, 5, 6})...))
	l := NewLink(pipeRW{in, &out})
	if err := l.WriteFrame(hx(t, "2f 00 05 01 ff ff 00 7e 7d")); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), hx(t, "7e 2f 00 05 01 ff ff 00 7d 5e 7d 5d 7d 5e 7e")) {
		t.Errorf("wrote % x", out.Bytes())
	}
	buf := make([]byte, 64)
	n, err := l.ReadFrame(buf)
	if err != nil || !bytes.Equal(buf[:n], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("read % x, %v", buf[:n], err)
	}
	n, err = l.ReadFrame(buf)
	if err != nil || !bytes.Equal(buf[:n], []byte{0x7e, 0x7d, 3, 4, 5, 6}) {
		t.Fatalf("read % x, %v", buf[:n], err)
	}
	if _, err := l.ReadFrame(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("at end: %v", err)
	}
	if err := l.WriteFrame(make([]byte, 65)); err == nil {
		t.Error("65-byte message accepted")
	}
}

func FuzzDeframer(f *testing.F) {
	for _, v := range wireVectors {
		b, _ := dpa.ParseDottedHex(v.wire)
		f.Add(b)
	}
	f.Add([]byte{flag, escape, flag, 1, 2, flag})
	f.Fuzz(func(t *testing.T, wire []byte) {
		var d Deframer
		for _, c := range wire {
			m, ok, err := d.Push(c)
			if err != nil && !errors.Is(err, dpa.ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			if ok {
				if len(m) == 0 || len(m) > MaxData {
					t.Fatalf("message of %d bytes", len(m))
				}
				// Every accepted message re-frames and decodes to itself.
				var d2 Deframer
				msgs, errs := pushAll(&d2, AppendFrame(nil, m))
				if len(errs) != 0 || len(msgs) != 1 || !bytes.Equal(msgs[0], m) {
					t.Fatalf("round trip of % x: %x %v", m, msgs, errs)
				}
			}
		}
	})
}

func BenchmarkDeframeDecode(b *testing.B) {
	wire := AppendFrame(nil, hx(b, "01 00 5e 81 02 14 00 51 01 c8 01 02 87 09"))
	var d Deframer
	var f dpa.Frame
	b.ReportAllocs()
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
}
