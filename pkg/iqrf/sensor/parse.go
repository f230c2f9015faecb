package sensor

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
)

// Standard Sensor commands (PNUM 0x5E).
const (
	CmdReadSensors          = 0x00
	CmdReadSensorsWithTypes = 0x01
	CmdEnumerate            = 0x3E
	// MaxSensors is the number of sensor indexes a device may have.
	MaxSensors = 32
)

// ErrPayload is wrapped by every error about a sensor payload that cannot
// be decoded.
var ErrPayload = fmt.Errorf("sensor payload: %w", dpa.ErrMalformed)

// Value is one sensor value from a Read Sensors With Types response.
type Value struct {
	// Index is the sensor's index on the device (0-31).
	Index int
	Type  uint8
	// Quantity is nil for a type this table does not know.
	Quantity *Quantity
	// Raw aliases the response's PData.
	Raw []byte
	// Value is set when Valid.
	Value float64
	// Valid is false for "not available" values, unknown types and data
	// blocks: they produce no reading.
	Valid bool
}

// ParseEnumerate decodes an Enumerate response: the type of each sensor
// index in order.
func ParseEnumerate(pdata []byte) ([]uint8, error) {
	if len(pdata) > MaxSensors {
		return nil, fmt.Errorf("enumerate: %d sensors, more than %d: %w", len(pdata), MaxSensors, ErrPayload)
	}
	for i, t := range pdata {
		if t == 0 {
			return nil, fmt.Errorf("enumerate: sensor %d has type 0: %w", i, ErrPayload)
		}
	}
	return append([]uint8(nil), pdata...), nil
}

// ReadAll is the bitmap that selects every sensor.
const ReadAll = 0xFFFFFFFF

// ReadRequest returns the PData of Read Sensors [With Types] for the sensors
// selected by bitmap (bit i = sensor index i).
func ReadRequest(bitmap uint32) []byte {
	return binary.LittleEndian.AppendUint32(nil, bitmap)
}

// AppendReadWithTypes decodes a Read Sensors With Types response to the
// request with the given bitmap and appends one Value per sensor to dst.
// Unknown types are skipped by their width class (no reading); a value cut
// short is an error.
func AppendReadWithTypes(dst []Value, pdata []byte, bitmap uint32) ([]Value, error) {
	sel := bitmap
	for off := 0; off < len(pdata); {
		idx := len(dst)
		if bitmap != ReadAll {
			if sel == 0 {
				return dst, fmt.Errorf("read with types: more values than selected sensors: %w", ErrPayload)
			}
			idx = bits.TrailingZeros32(sel)
			sel &= sel - 1
		}
		if idx >= MaxSensors {
			return dst, fmt.Errorf("read with types: more than %d sensors: %w", MaxSensors, ErrPayload)
		}
		t := pdata[off]
		off++
		w := Width(t)
		switch {
		case w == 0:
			return dst, fmt.Errorf("read with types: sensor %d has type 0: %w", idx, ErrPayload)
		case w < 0:
			if off >= len(pdata) {
				return dst, fmt.Errorf("read with types: sensor %d type 0x%02x: missing length: %w", idx, t, ErrPayload)
			}
			w = int(pdata[off])
			off++
		}
		if off+w > len(pdata) {
			return dst, fmt.Errorf("read with types: sensor %d type 0x%02x: %d of %d value bytes: %w", idx, t, len(pdata)-off, w, ErrPayload)
		}
		v := Value{Index: idx, Type: t, Quantity: Lookup(t), Raw: pdata[off : off+w : off+w]}
		if v.Quantity != nil && v.Quantity.HasValue() {
			v.Value, v.Valid = v.Quantity.Value(v.Raw)
		}
		dst = append(dst, v)
		off += w
	}
	return dst, nil
}

// FRCStatus classifies one node's FRC value.
type FRCStatus uint8

// Reserved FRC values (predefined FRC values): 0 no response, 1 FRC not
// implemented, 2 sensor error or out of the FRC range, 3 reserved.
const (
	FRCValid FRCStatus = iota
	FRCNoResponse
	FRCNotImplemented
	FRCSensorError
	FRCReserved
	FRCUnsupported // the value cannot be decoded for this type and command
)

func (s FRCStatus) String() string {
	return [...]string{"ok", "no response", "FRC not implemented", "sensor error", "reserved value", "unsupported"}[s]
}

// FRCCapacity is the number of nodes one sensor FRC command can answer for:
// node slots 1..capacity (slot 0 is the coordinator's).
func FRCCapacity(cmd uint8) int {
	switch cmd {
	case FRC2Bit:
		return 239
	case FRC1Byte:
		return 63
	case FRC2Byte:
		return 31
	case FRC4Byte:
		return 15
	}
	return 0
}

// BestFRC returns the FRC command that carries the quantity at full
// precision, or 0 when it has none.
func (q *Quantity) BestFRC() uint8 {
	want := map[int]uint8{1: FRC1Byte, 2: FRC2Byte, 4: FRC4Byte}[q.Width()]
	for _, c := range q.FRCs {
		if c == want {
			return c
		}
	}
	return 0
}

// FRCRequest is the PData of FRC Send Selective (PCMD 0x02) for a sensor FRC
// of the given command over the selected nodes: FRC command, the 30-byte
// node bitmap, then the user data 5E, sensor type, sensor index (bits 0-4;
// extended bits 5-7), options 0.
func FRCRequest(cmd uint8, nodes []uint8, sensorType, sensorIndex uint8) ([]byte, error) {
	p := make([]byte, 1+30+4)
	p[0] = cmd
	for _, n := range nodes {
		if n == 0 || n > dpa.AddrMaxNode {
			return nil, fmt.Errorf("sensor frc: node address %d out of 1-239", n)
		}
		p[1+n/8] |= 1 << (n % 8)
	}
	p[31], p[32], p[33], p[34] = dpa.PNUMStdSensor, sensorType, sensorIndex, 0
	return p, nil
}

// FRCValue decodes the value of the node in the given slot (1..capacity)
// from the 64-byte FRC buffer (55 bytes of FRC Send plus 9 of Extra
// Result). q is the quantity of the type asked for.
func FRCValue(cmd uint8, q *Quantity, data []byte, slot int) (float64, FRCStatus, error) {
	if slot < 1 || slot > FRCCapacity(cmd) {
		return 0, 0, fmt.Errorf("sensor frc: slot %d out of range for command 0x%02x", slot, cmd)
	}
	var f uint32
	switch cmd {
	case FRC2Bit:
		if len(data) < 62 {
			return 0, 0, fmt.Errorf("sensor frc: %d bytes for 2-bit values: %w", len(data), ErrPayload)
		}
		b0 := uint32(data[slot/8]>>(slot%8)) & 1
		b1 := uint32(data[32+slot/8]>>(slot%8)) & 1
		f = b1<<1 | b0
		switch f {
		case 0:
			return 0, FRCNoResponse, nil
		case 1:
			return 0, FRCNotImplemented, nil
		}
		return float64(f & 1), FRCValid, nil
	case FRC1Byte:
		if len(data) <= slot {
			return 0, 0, fmt.Errorf("sensor frc: %d bytes for slot %d: %w", len(data), slot, ErrPayload)
		}
		f = uint32(data[slot])
	case FRC2Byte:
		if len(data) < 2*slot+2 {
			return 0, 0, fmt.Errorf("sensor frc: %d bytes for slot %d: %w", len(data), slot, ErrPayload)
		}
		f = uint32(binary.LittleEndian.Uint16(data[2*slot:]))
	case FRC4Byte:
		if len(data) < 4*slot+4 {
			return 0, 0, fmt.Errorf("sensor frc: %d bytes for slot %d: %w", len(data), slot, ErrPayload)
		}
		f = binary.LittleEndian.Uint32(data[4*slot:])
	default:
		return 0, 0, fmt.Errorf("sensor frc: unknown command 0x%02x", cmd)
	}
	if f < 4 {
		return 0, [...]FRCStatus{FRCNoResponse, FRCNotImplemented, FRCSensorError, FRCReserved}[f], nil
	}
	if q == nil {
		return 0, FRCUnsupported, nil
	}
	v, ok := frcConvert(cmd, q, f)
	if !ok {
		return 0, FRCSensorError, nil
	}
	return v, FRCValid, nil
}

func frcConvert(cmd uint8, q *Quantity, f uint32) (float64, bool) {
	switch cmd {
	case FRC1Byte:
		switch q.Type {
		case 0x01:
			return float64(f)/2 - 22, true
		case 0x02, 0x03:
			return float64(f-4) * 16, true
		}
		if Width(q.Type) == 1 {
			return q.fromRaw(f - 4)
		}
	case FRC2Byte:
		if Width(q.Type) != 2 {
			return 0, false
		}
		if q.enc == encS16 {
			return float64(int16(uint16(f^0x8000))) * q.scale, true
		}
		return q.fromRaw(f - 4)
	case FRC4Byte:
		if Width(q.Type) != 4 {
			return 0, false
		}
		switch q.enc {
		case encLatLon:
			return latLon(f)
		case encFloat:
			v := math.Float32frombits(f - 4)
			if v != v || math.IsInf(float64(v), 0) {
				return 0, false
			}
			return float64(v), true
		}
		return q.fromRaw(f - 4)
	}
	return 0, false
}
