package sensor

import (
	"errors"
	"math"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
)

func frame(t testing.TB, s string) dpa.Frame {
	t.Helper()
	b, err := dpa.ParseDottedHex(s)
	if err != nil {
		t.Fatal(err)
	}
	var f dpa.Frame
	if err := f.Decode(b); err != nil {
		t.Fatal(err)
	}
	return f
}

type want struct {
	typ   uint8
	value float64
	valid bool
}

func check(t *testing.T, got []Value, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("%d values, want %d", len(got), len(wants))
	}
	for i, w := range wants {
		g := got[i]
		if g.Type != w.typ || g.Valid != w.valid || math.Abs(g.Value-w.value) > 1e-9 {
			t.Errorf("sensor %d: type 0x%02x value %v valid %v; want type 0x%02x value %v valid %v",
				g.Index, g.Type, g.Value, g.Valid, w.typ, w.value, w.valid)
		}
	}
}

func TestS1ReadAllSensors(t *testing.T) {
	f := frame(t, "01.00.5e.81.15.10.00.58.14.6a.16.02.e8.00.80.5c.0b.1c.00.a0.00.00.00.80.81.02.15.c5.09.15.f7.ff.15.2c.00.a0.00.00.00.00.10.40.3c.13.90.01.01.5a.01.03.06.00.04.46.11")
	if f.HWPID != 4117 || f.DpaValue != 88 {
		t.Fatalf("hwpid %d dpaValue %d", f.HWPID, f.DpaValue)
	}
	vals, err := AppendReadWithTypes(nil, f.PData, ReadAll)
	if err != nil {
		t.Fatal(err)
	}
	check(t, vals, []want{
		{0x14, 410.5, true}, {0x02, 232, true}, {0x80, 46.0, true}, {0x0b, 28, true},
		{0xa0, 0, false}, // 0x80000000: error, no reading
		{0x81, 2, true},
		{0x15, 9.76953125, true}, {0x15, -0.03515625, true}, {0x15, 0.171875, true},
		{0xa0, 0, true}, {0x10, 964.0, true}, {0x13, 25.0, true}, {0x01, 21.625, true},
		{0x03, 6, true}, {0x04, 4.422, true},
	})
	for i, v := range vals {
		if v.Index != i {
			t.Errorf("value %d has index %d", i, v.Index)
		}
	}
	if vals[12].Quantity.Metric != "temperature" || vals[2].Quantity.Unit != "%" || vals[1].Quantity.Metric != "co2" {
		t.Errorf("names: %q %q %q", vals[12].Quantity.Metric, vals[2].Quantity.Unit, vals[1].Quantity.Metric)
	}
}

func TestS2SelectedSensors(t *testing.T) {
	f := frame(t, "01.00.5e.81.02.14.00.51.01.c8.01.02.87.09")
	vals, err := AppendReadWithTypes(nil, f.PData, 0x03)
	if err != nil {
		t.Fatal(err)
	}
	check(t, vals, []want{{0x01, 28.5, true}, {0x02, 2439, true}})
	// The v3.x branch variant: T = 21.0 °C.
	f = frame(t, "01.00.5e.81.02.14.00.51.01.50.01.02.87.09")
	vals, _ = AppendReadWithTypes(nil, f.PData, 0x03)
	check(t, vals, []want{{0x01, 21.0, true}, {0x02, 2439, true}})
}

func TestDocExampleBitmapIndexes(t *testing.T) {
	// Request PData 09 00 00 00 selects indexes 0 and 3.
	vals, err := AppendReadWithTypes(nil, []byte{0x01, 0x40, 0x01, 0x80, 0xA0}, 0x09)
	if err != nil {
		t.Fatal(err)
	}
	check(t, vals, []want{{0x01, 20.0, true}, {0x80, 80.0, true}})
	if vals[0].Index != 0 || vals[1].Index != 3 {
		t.Errorf("indexes %d %d, want 0 3", vals[0].Index, vals[1].Index)
	}
	if _, err := AppendReadWithTypes(nil, []byte{0x01, 0x40, 0x01, 0x80, 0xA0}, 0x01); !errors.Is(err, ErrPayload) {
		t.Errorf("extra value accepted: %v", err)
	}
}

func TestEnumerate(t *testing.T) {
	f := frame(t, "01.00.5e.be.15.10.00.58.14.02.80.0b.a0.81.15.15.15.a0.10.13.01.03.04")
	types, err := ParseEnumerate(f.PData)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint8{0x14, 0x02, 0x80, 0x0b, 0xa0, 0x81, 0x15, 0x15, 0x15, 0xa0, 0x10, 0x13, 0x01, 0x03, 0x04}
	if string(types) != string(want) {
		t.Errorf("types % x", types)
	}
	f = frame(t, "01.00.5e.be.02.00.00.48.01.01.81.81")
	types, _ = ParseEnumerate(f.PData)
	if string(types) != string([]uint8{1, 1, 0x81, 0x81}) {
		t.Errorf("E2 types % x", types)
	}
	if _, err := ParseEnumerate([]byte{1, 0}); !errors.Is(err, ErrPayload) {
		t.Errorf("type 0 accepted: %v", err)
	}
	if _, err := ParseEnumerate(make([]byte, 33)); !errors.Is(err, ErrPayload) {
		t.Errorf("33 sensors accepted: %v", err)
	}
}

func TestNotAvailableValues(t *testing.T) {
	cases := []struct {
		typ uint8
		raw []byte
	}{
		{0x01, []byte{0x00, 0x80}}, {0x02, []byte{0x00, 0x80}}, {0x08, []byte{0xff, 0xff}}, {0x14, []byte{0xff, 0xff}},
		{0x80, []byte{0xee}}, {0x81, []byte{0x80}}, {0x83, []byte{0xff}}, {0x86, []byte{0xfb}},
		{0xa0, []byte{0, 0, 0, 0x80}}, {0xa1, []byte{0xff, 0xff, 0xff, 0xff}}, {0xa4, []byte{0, 0, 0, 0xff}},
		{0xa6, []byte{0xff, 0xff, 0xff, 0x7f}},
	}
	for _, c := range cases {
		if v, ok := Lookup(c.typ).Value(c.raw); ok {
			t.Errorf("type 0x%02x raw % x gave %v, want no reading", c.typ, c.raw, v)
		}
	}
}

func TestScaling(t *testing.T) {
	cases := []struct {
		typ  uint8
		raw  []byte
		want float64
	}{
		{0x01, []byte{0xf0, 0xff}, -1}, // s16 -16 / 16
		{0x85, []byte{0xf4}, -5},       // RSSI (244-254)/2
		{0x82, []byte{200}, 1},         // power factor
		{0xa4, []byte{0x68, 0x1a, 0x59, 0x32}, 50.42793333333333},
		{0xa5, []byte{0x68, 0x1a, 0xd9, 0x32}, -50.42793333333333},
		{0xa6, []byte{0x00, 0x00, 0xb0, 0x41}, 22},
		{0xa3, []byte{0x20, 0, 0, 0}, 2},
		{0x05, []byte{0x10, 0x27}, 0.001},
	}
	for _, c := range cases {
		v, ok := Lookup(c.typ).Value(c.raw)
		if !ok || math.Abs(v-c.want) > 1e-9 {
			t.Errorf("type 0x%02x raw % x = %v %v, want %v", c.typ, c.raw, v, ok, c.want)
		}
	}
}

func TestUnknownTypesSkippedByWidth(t *testing.T) {
	// 0x7E (2 bytes, unknown), 0x9E (1 byte, unknown), 0xBE (4 bytes,
	// unknown), 0xC0 data block of 3 bytes, 0xC5 unknown variable of 1 byte,
	// then a temperature.
	pdata := []byte{0x7e, 1, 2, 0x9e, 3, 0xbe, 1, 2, 3, 4, 0xc0, 3, 9, 9, 9, 0xc5, 1, 7, 0x01, 0x40, 0x01}
	vals, err := AppendReadWithTypes(nil, pdata, ReadAll)
	if err != nil {
		t.Fatal(err)
	}
	check(t, vals, []want{{0x7e, 0, false}, {0x9e, 0, false}, {0xbe, 0, false}, {0xc0, 0, false}, {0xc5, 0, false}, {0x01, 20, true}})
	for _, bad := range [][]byte{{0x01, 0x40}, {0xa0, 1, 2}, {0xc0}, {0xc0, 5, 1}, {0x00, 1}} {
		if _, err := AppendReadWithTypes(nil, bad, ReadAll); !errors.Is(err, ErrPayload) {
			t.Errorf("% x: %v", bad, err)
		}
	}
}

func TestFRCVectorF1(t *testing.T) {
	f := frame(t, "00.00.0d.80.00.00.00.00.03.00.5e.00.01.01.00")
	if f.PData[0] != 3 {
		t.Fatalf("status %d", f.PData[0])
	}
	data := make([]byte, 64)
	copy(data, f.PData[1:])
	temp := Lookup(0x01)
	v, st, err := FRCValue(FRC1Byte, temp, data, 1)
	if err != nil || st != FRCValid || v != 25.0 {
		t.Errorf("node 1: %v %v %v", v, st, err)
	}
	for slot, want := range map[int]FRCStatus{2: FRCNoResponse, 3: FRCNotImplemented, 4: FRCNotImplemented} {
		if _, st, _ := FRCValue(FRC1Byte, temp, data, slot); st != want {
			t.Errorf("node %d: status %v, want %v", slot, st, want)
		}
	}
	req, err := FRCRequest(FRC1Byte, []uint8{1, 2, 3, 4}, 1, 0)
	if err != nil || len(req) != 35 || req[1] != 0x1e || req[31] != 0x5e || req[32] != 1 {
		t.Errorf("request % x %v", req, err)
	}
}

func TestFRCEncodings(t *testing.T) {
	data := make([]byte, 64)
	// 2-byte temperature, node 2: 21.625 °C = 0x015A, sent as F = raw ^ 0x8000.
	data[4], data[5] = 0x5a, 0x81
	if v, st, _ := FRCValue(FRC2Byte, Lookup(0x01), data, 2); st != FRCValid || v != 21.625 {
		t.Errorf("2-byte temperature %v %v", v, st)
	}
	// 2-byte CO2 at node 3: F = 232 + 4.
	data[6], data[7] = 236, 0
	if v, st, _ := FRCValue(FRC2Byte, Lookup(0x02), data, 3); st != FRCValid || v != 232 {
		t.Errorf("2-byte CO2 %v %v", v, st)
	}
	// 2-byte sensor error at node 4.
	data[8] = 2
	if _, st, _ := FRCValue(FRC2Byte, Lookup(0x02), data, 4); st != FRCSensorError {
		t.Errorf("status %v", st)
	}
	// 1-byte humidity at node 5: (F-4)/2.
	data[5] = 96
	if v, st, _ := FRCValue(FRC1Byte, Lookup(0x80), data, 5); st != FRCValid || v != 46 {
		t.Errorf("1-byte RH %v %v", v, st)
	}
	// 4-byte consumption at node 15 (bytes 60-63, 4 of them from the Extra Result).
	data[60], data[61], data[62], data[63] = 0x0e, 0x01, 0, 0
	if v, st, _ := FRCValue(FRC4Byte, Lookup(0xa1), data, 15); st != FRCValid || v != 0x10a {
		t.Errorf("4-byte consumption %v %v", v, st)
	}
	// 2-bit: node 9 answers bit value 1, node 10 bit value 0, node 11 not implemented.
	bits := make([]byte, 64)
	bits[1] = 0x02 | 0x08 // bit0 of nodes 9 and 11
	bits[33] = 0x02 | 0x04
	for slot, w := range map[int]struct {
		v  float64
		st FRCStatus
	}{9: {1, FRCValid}, 10: {0, FRCValid}, 11: {0, FRCNotImplemented}, 12: {0, FRCNoResponse}} {
		v, st, _ := FRCValue(FRC2Bit, Lookup(0x81), bits, slot)
		if v != w.v || st != w.st {
			t.Errorf("2-bit node %d: %v %v, want %v %v", slot, v, st, w.v, w.st)
		}
	}
	if _, _, err := FRCValue(FRC2Byte, Lookup(0x01), data, 32); err == nil {
		t.Error("slot 32 accepted for 2-byte FRC")
	}
	if Lookup(0x01).BestFRC() != FRC2Byte || Lookup(0x80).BestFRC() != FRC1Byte || Lookup(0xa1).BestFRC() != FRC4Byte || Lookup(0xc0).BestFRC() != 0 {
		t.Error("BestFRC")
	}
}

func FuzzReadWithTypes(f *testing.F) {
	f.Add([]byte{0x14, 0x6a, 0x16, 0x02, 0xe8, 0x00, 0x80, 0x5c, 0xa0, 0, 0, 0, 0x80, 0xc0, 2, 1, 2}, uint32(ReadAll))
	f.Add([]byte{0x01, 0x40, 0x01, 0x80, 0xA0}, uint32(9))
	f.Fuzz(func(t *testing.T, pdata []byte, bitmap uint32) {
		vals, err := AppendReadWithTypes(nil, pdata, bitmap)
		if err != nil && !errors.Is(err, ErrPayload) {
			t.Fatalf("error %v", err)
		}
		for _, v := range vals {
			if v.Index < 0 || v.Index >= MaxSensors {
				t.Fatalf("index %d", v.Index)
			}
			if v.Valid && (math.IsNaN(v.Value) || math.IsInf(v.Value, 0)) {
				t.Fatalf("valid value %v", v.Value)
			}
		}
		if _, err := ParseEnumerate(pdata); err != nil && !errors.Is(err, ErrPayload) {
			t.Fatalf("enumerate error %v", err)
		}
	})
}

func FuzzFRC(f *testing.F) {
	f.Add(uint8(FRC1Byte), uint8(1), make([]byte, 64), 1)
	f.Add(uint8(FRC2Byte), uint8(0xa6), []byte{0, 0, 1, 2, 3, 4}, 1)
	f.Fuzz(func(t *testing.T, cmd, typ uint8, data []byte, slot int) {
		v, st, err := FRCValue(cmd, Lookup(typ), data, slot)
		if err == nil && st == FRCValid && (math.IsNaN(v) || math.IsInf(v, 0)) {
			t.Fatalf("valid value %v", v)
		}
	})
}
