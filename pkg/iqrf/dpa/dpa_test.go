package dpa

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := ParseDottedHex(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeReferenceVectors(t *testing.T) {
	tests := []struct {
		name  string
		hex   string
		want  Frame
		pdata string
	}{
		{"S2 request", "01.00.5e.01.ff.ff.03.00.00.00",
			Frame{Kind: KindRequest, NADR: 1, PNUM: 0x5e, PCMD: 0x01, HWPID: 0xffff}, "03.00.00.00"},
		{"S2 confirmation", "01.00.5e.01.ff.ff.ff.50.01.08.01",
			Frame{Kind: KindConfirmation, NADR: 1, PNUM: 0x5e, PCMD: 0x01, HWPID: 0xffff, ErrN: StatusConfirmation, DpaValue: 0x50, Hops: 1, SlotLength: 8, HopsResponse: 1}, ""},
		{"S2 response", "01.00.5e.81.02.14.00.51.01.c8.01.02.87.09",
			Frame{Kind: KindResponse, NADR: 1, PNUM: 0x5e, PCMD: 0x01, HWPID: 0x1402, DpaValue: 0x51}, "01.c8.01.02.87.09"},
		{"raw HDP confirmation", "01.00.06.03.ff.ff.ff.00.01.08.01",
			Frame{Kind: KindConfirmation, NADR: 1, PNUM: 6, PCMD: 3, HWPID: 0xffff, ErrN: StatusConfirmation, Hops: 1, SlotLength: 8, HopsResponse: 1}, ""},
		{"E1 response", "01.00.5e.be.15.10.00.58.14.02.80.0b.a0.81.15.15.15.a0.10.13.01.03.04",
			Frame{Kind: KindResponse, NADR: 1, PNUM: 0x5e, PCMD: 0x3e, HWPID: 0x1015, DpaValue: 0x58}, "14.02.80.0b.a0.81.15.15.15.a0.10.13.01.03.04"},
		{"A1 addr info", "00.00.00.80.00.00.00.40.00.2a",
			Frame{Kind: KindResponse, PNUM: 0, PCMD: 0, HWPID: 0, DpaValue: 0x40}, "00.2a"},
		{"T1 error-free thermometer", "03.00.0a.80.00.00.00.40.80.04.00",
			Frame{Kind: KindResponse, NADR: 3, PNUM: 0x0a, PCMD: 0, DpaValue: 0x40}, "80.04.00"},
		{"reset async", "00.00.ff.bf.00.00.80.00.17.04.00.fd.26.00.00.00.00.00.00.05",
			Frame{Kind: KindAsync, PNUM: 0xff, PCMD: 0x3f}, "17.04.00.fd.26.00.00.00.00.00.00.05"},
		{"error response", "05.00.5e.81.ff.ff.08.20",
			Frame{Kind: KindResponse, NADR: 5, PNUM: 0x5e, PCMD: 1, HWPID: 0xffff, ErrN: ErrorNADR, DpaValue: 0x20}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustHex(t, tt.hex)
			var f Frame
			if err := f.Decode(b); err != nil {
				t.Fatal(err)
			}
			pd := f.PData
			f.PData = nil
			if !reflect.DeepEqual(f, tt.want) {
				t.Errorf("got %+v\nwant %+v", f, tt.want)
			}
			if want := mustHex(t, tt.pdata); !bytes.Equal(pd, want) {
				t.Errorf("pdata % x, want % x", pd, want)
			}
			f.PData = pd
			if got := f.Append(nil); !bytes.Equal(got, b) {
				t.Errorf("re-encoded % x, want % x", got, b)
			}
		})
	}
}

func TestDecodeRequestDirection(t *testing.T) {
	// Read all sensors: PData starts with 0xFF, as a confirmation's byte 6.
	b := mustHex(t, "01.00.5e.01.ff.ff.ff.ff.ff.ff")
	var f Frame
	if err := f.Decode(b); err != nil || f.Kind != KindRequest {
		t.Fatalf("10-byte frame: %v %v", f.Kind, err)
	}
	// 11 bytes with 0xFF at offset 6 is a confirmation from the coordinator,
	// but a request when sent to it.
	b = mustHex(t, "01.00.5e.01.ff.ff.ff.ff.ff.ff.00")
	if err := f.DecodeRequest(b); err != nil || f.Kind != KindRequest || len(f.PData) != 5 {
		t.Fatalf("DecodeRequest: %v %v", f.Kind, err)
	}
	if err := f.DecodeRequest(mustHex(t, "01.00.5e.81.ff.ff.00.00")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("response accepted as request: %v", err)
	}
}

func TestResetMessage(t *testing.T) {
	var f Frame
	if err := f.Decode(mustHex(t, "00.00.ff.bf.00.00.80.00.17.04")); err != nil {
		t.Fatal(err)
	}
	if !f.IsReset() {
		t.Fatalf("not recognised as reset: %v", &f)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, s := range []string{"", "01", "01.00.5e.01.ff", "01.00.5e.81.ff.ff.00", "01.00.5e.01.ff.ff" + string(bytes.Repeat([]byte(".00"), 57)),
		"01.00.5e.81.ff.ff.00.00" + string(bytes.Repeat([]byte(".00"), 57))} {
		var f Frame
		err := f.Decode(mustHex(t, s))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: err %v, want ErrMalformed", s, err)
		}
	}
}

func TestResponseCodeIsError(t *testing.T) {
	var err error = ErrorNADR
	if !errors.Is(err, ErrorNADR) || errors.Is(err, ErrorFail) {
		t.Fatal("errors.Is does not tell codes apart")
	}
	if got := ResponseCode(0x21).Name(); got != "ERROR_USER_21" {
		t.Errorf("user code name %q", got)
	}
	if ErrorHWPID.Error() != "dpa response code 7 (ERROR_HWPID)" {
		t.Errorf("message %q", ErrorHWPID.Error())
	}
}

func TestTiming(t *testing.T) {
	var c Frame
	if err := c.Decode(mustHex(t, "01.00.5e.01.ff.ff.ff.50.01.08.01")); err != nil {
		t.Fatal(err)
	}
	// LP network: (1+1)*80 + (1+1)*110 + 40 = 420 ms.
	if got := c.ResponseTimeout(); got != 420*time.Millisecond {
		t.Errorf("LP timeout %v", got)
	}
	c.SlotLength = 4
	// STD: (1+1)*40 + (1+1)*60 + 40 = 240 ms.
	if got := c.ResponseTimeout(); got != 240*time.Millisecond {
		t.Errorf("STD timeout %v", got)
	}
	c.Hops, c.HopsResponse = 11, 11
	c.SlotLength = 8
	// (12)*80 + 12*110 + 40 = 2320 ms.
	if got := c.ResponseTimeout(); got != 2320*time.Millisecond {
		t.Errorf("11-hop timeout %v", got)
	}
	tc := time.Unix(100, 0)
	c.Hops, c.HopsResponse, c.SlotLength = 1, 1, 8
	// S1: 47 bytes PData on LP: (2)*80 + 2*100 = 360 ms.
	if got := c.RoutingDone(tc, 47).Sub(tc); got != 360*time.Millisecond {
		t.Errorf("routing done after %v", got)
	}
	if got := c.RoutingDone(tc, 6).Sub(tc); got != 320*time.Millisecond {
		t.Errorf("routing done after %v for a short response", got)
	}
}

func TestDottedHex(t *testing.T) {
	if got := DottedHex([]byte{1, 0, 0x5e, 0xff}); got != "01.00.5e.ff" {
		t.Errorf("got %q", got)
	}
	if _, err := ParseDottedHex("01.0g"); err == nil {
		t.Error("bad hex accepted")
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{"01.00.5e.01.ff.ff.03.00.00.00", "01.00.5e.01.ff.ff.ff.50.01.08.01",
		"01.00.5e.81.02.14.00.51.01.c8.01.02.87.09", "00.00.ff.bf.00.00.80.00.17.04", "00.00.00.80.00.00.00.40.00.2a"} {
		b, _ := ParseDottedHex(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr Frame
		if err := fr.Decode(b); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		_ = fr.String()
		enc := fr.Append(nil)
		var again Frame
		if err := again.Decode(enc); err != nil {
			t.Fatalf("re-decode of % x: %v", enc, err)
		}
		if fr.Kind != again.Kind || fr.NADR != again.NADR || fr.PNUM != again.PNUM || fr.PCMD != again.PCMD ||
			fr.HWPID != again.HWPID || fr.ErrN != again.ErrN || !bytes.Equal(fr.PData, again.PData) {
			t.Fatalf("round trip changed frame: %v vs %v", &fr, &again)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	frame, _ := ParseDottedHex("01.00.5e.81.02.14.00.51.01.c8.01.02.87.09")
	var f Frame
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}
