// Package sensor decodes the IQRF Standard Sensor (PNUM 0x5E): Enumerate,
// Read Sensors With Types and sensor FRC, through the full quantity table
// (scaling, units, signedness and the per-width "not available" values).
package sensor

import (
	"encoding/binary"
	"math"
)

// Width returns the value width in bytes that the type code implies: 2 for
// 0x01-0x7F, 1 for 0x80-0x9F, 4 for 0xA0-0xBF, and -1 for 0xC0-0xFF (the
// first value byte gives the length). 0 means the type has no width.
func Width(t uint8) int {
	switch {
	case t == 0:
		return 0
	case t < 0x80:
		return 2
	case t < 0xA0:
		return 1
	case t < 0xC0:
		return 4
	}
	return -1
}

type encoding uint8

const (
	encU8 encoding = iota
	encU16
	encS16
	encU32
	encBin7
	encBin30
	encFloat
	encLatLon
	encBlock
)

// Quantity describes one sensor type of the standard.
type Quantity struct {
	Type uint8
	// ID is the IQRF Gateway Daemon's identifier, e.g. "TEMPERATURE".
	ID string
	// Name is the human name, e.g. "Relative humidity".
	Name string
	// Metric is the snake_case name used in metric paths and topics.
	Metric    string
	ShortName string
	Unit      string
	// DecimalPlaces is what the daemon reports for the value.
	DecimalPlaces int
	// FRCs lists the sensor FRC commands the type supports.
	FRCs []uint8

	enc    encoding
	scale  float64
	offset float64
	errRaw uint32
	hasErr bool
}

// Sensor FRC commands.
const (
	FRC2Bit  = 0x10
	FRC1Byte = 0x90
	FRC2Byte = 0xE0
	FRC4Byte = 0xF9
)

var (
	frc2    = []uint8{FRC1Byte, FRC2Byte}
	frcE0   = []uint8{FRC2Byte}
	frc1    = []uint8{FRC1Byte}
	frcF9   = []uint8{FRC4Byte}
	frcBin7 = []uint8{FRC2Bit, FRC1Byte}
	frcBin3 = []uint8{FRC2Byte, FRC4Byte}
)

func q(t uint8, id, name, metric, short, unit string, dp int, enc encoding, scale, offset float64, errRaw uint32, hasErr bool, frcs []uint8) Quantity {
	return Quantity{Type: t, ID: id, Name: name, Metric: metric, ShortName: short, Unit: unit, DecimalPlaces: dp,
		FRCs: frcs, enc: enc, scale: scale, offset: offset, errRaw: errRaw, hasErr: hasErr}
}

// The quantity table of the reference (section 3.2).
var table = [...]Quantity{
	q(0x01, "TEMPERATURE", "Temperature", "temperature", "t", "°C", 4, encS16, 1.0/16, 0, 0x8000, true, frc2),
	q(0x02, "CARBON_DIOXIDE", "Carbon dioxide", "co2", "CO2", "ppm", 0, encU16, 1, 0, 0x8000, true, frc2),
	q(0x03, "VOLATILE_ORGANIC_COMPOUND", "Volatile organic compound", "voc", "VOC", "ppm", 0, encU16, 1, 0, 0x8000, true, frc2),
	q(0x04, "EXTRA_LOW_VOLTAGE", "Extra-low voltage", "extra_low_voltage", "U", "V", 3, encS16, 1.0/1000, 0, 0x8000, true, frcE0),
	q(0x05, "EARTHS_MAGNETIC_FIELD", "Earth's magnetic field", "earths_magnetic_field", "B", "T", 7, encS16, 1e-7, 0, 0x8000, true, frcE0),
	q(0x06, "LOW_VOLTAGE", "Low voltage", "low_voltage", "U", "V", 4, encS16, 1.0/16, 0, 0x8000, true, frcE0),
	q(0x07, "CURRENT", "Current", "current", "I", "A", 3, encS16, 1.0/1000, 0, 0x8000, true, frcE0),
	q(0x08, "POWER", "Power", "power", "P", "W", 2, encU16, 1.0/4, 0, 0xFFFF, true, frcE0),
	q(0x09, "MAINS_FREQUENCY", "Mains frequency", "mains_frequency", "f", "Hz", 3, encU16, 1.0/1000, 0, 0xFFFF, true, frcE0),
	q(0x0A, "TIMESPAN", "Timespan", "timespan", "t", "s", 0, encU16, 1, 0, 0xFFFF, true, frcE0),
	q(0x0B, "ILLUMINANCE", "Illuminance", "illuminance", "Ev", "lx", 0, encU16, 1, 0, 0xFFFF, true, frcE0),
	q(0x0C, "NITROGEN_DIOXIDE", "Nitrogen dioxide", "no2", "NO2", "ppm", 3, encU16, 1.0/1000, 0, 0xFFFF, true, frcE0),
	q(0x0D, "SULFUR_DIOXIDE", "Sulfur dioxide", "so2", "SO2", "ppm", 3, encU16, 1.0/1000, 0, 0xFFFF, true, frcE0),
	q(0x0E, "CARBON_MONOXIDE", "Carbon monoxide", "co", "CO", "ppm", 2, encU16, 1.0/100, 0, 0xFFFF, true, frcE0),
	q(0x0F, "OZONE", "Ozone", "o3", "O3", "ppm", 4, encU16, 1.0/10000, 0, 0xFFFF, true, frcE0),
	q(0x10, "ATMOSPHERIC_PRESSURE", "Atmospheric pressure", "atmospheric_pressure", "p", "hPa", 4, encU16, 1.0/16, 0, 0xFFFF, true, frcE0),
	q(0x11, "COLOR_TEMPERATURE", "Color temperature", "color_temperature", "Tc", "K", 0, encU16, 1, 0, 0x8000, true, frcE0),
	q(0x12, "PARTICULATES_PM2_5", "Particulates PM2.5", "particulates_pm2_5", "PM2.5", "µg/m³", 2, encU16, 1.0/4, 0, 0x8000, true, frcE0),
	q(0x13, "SOUND_PRESSURE_LEVEL", "Sound pressure level", "sound_pressure_level", "Lp", "dB", 4, encU16, 1.0/16, 0, 0x8000, true, frcE0),
	q(0x14, "ALTITUDE", "Altitude", "altitude", "h", "m", 2, encU16, 1.0/4, -1024, 0xFFFF, true, frcE0),
	q(0x15, "ACCELERATION", "Acceleration", "acceleration", "a", "m/s²", 8, encS16, 1.0/256, 0, 0x8000, true, frcE0),
	q(0x16, "AMMONIA", "Ammonia", "nh3", "NH3", "ppm", 1, encU16, 1.0/10, 0, 0xFFFF, true, frcE0),
	q(0x17, "METHANE", "Methane", "methane", "CH4", "%", 3, encU16, 1.0/1000, 0, 0xFFFF, true, frcE0),
	q(0x18, "SHORT_LENGTH", "Short length", "short_length", "l", "m", 3, encU16, 1.0/1000, 0, 0xFFFF, true, frcE0),
	q(0x19, "PARTICULATES_PM1", "Particulates PM1", "particulates_pm1", "PM1", "µg/m³", 2, encU16, 1.0/4, 0, 0x8000, true, frcE0),
	q(0x1A, "PARTICULATES_PM4", "Particulates PM4", "particulates_pm4", "PM4", "µg/m³", 2, encU16, 1.0/4, 0, 0x8000, true, frcE0),
	q(0x1B, "PARTICULATES_PM10", "Particulates PM10", "particulates_pm10", "PM10", "µg/m³", 2, encU16, 1.0/4, 0, 0x8000, true, frcE0),
	q(0x1C, "TOTAL_VOLATILE_ORGANIC_COMPOUND", "Total volatile organic compound", "tvoc", "TVOC", "µg/m³", 0, encU16, 1, 0, 0xFFFF, true, frcE0),
	q(0x1D, "NITROGEN_OXIDES", "Nitrogen oxides", "nox", "NOX", "", 0, encU16, 1, 0, 0xFFFF, true, frcE0),
	q(0x1E, "ACTIVITY_CONCENTRATION", "Activity concentration", "activity_concentration", "a", "Bq/m³", 0, encU16, 1, 0, 0xFFFF, true, frcE0),
	q(0x1F, "BINARY_INPUT", "Binary input", "binary_input", "bin", "", 0, encU16, 1, 0, 0, false, nil),
	q(0x20, "PARTICULATES_PM40", "Particulates PM40", "particulates_pm40", "PM40", "µg/m³", 2, encU16, 1.0/4, 0, 0x8000, true, frcE0),
	q(0x80, "RELATIVE_HUMIDITY", "Relative humidity", "relative_humidity", "RH", "%", 1, encU8, 1.0/2, 0, 0xEE, true, frc1),
	q(0x81, "BINARYDATA7", "Binary data7", "binary_data7", "bin7", "", 0, encBin7, 1, 0, 0, false, frcBin7),
	q(0x82, "POWER_FACTOR", "Power factor", "power_factor", "cos θ", "", 3, encU8, 1.0/200, 0, 0xEE, true, frc1),
	q(0x83, "UV_INDEX", "UV index", "uv_index", "UV", "", 3, encU8, 1.0/8, 0, 0xFF, true, frc1),
	q(0x84, "PH", "pH", "ph", "pH", "", 4, encU8, 1.0/16, 0, 0xFF, true, frc1),
	q(0x85, "RSSI", "RSSI", "rssi", "RSSI", "dBm", 1, encU8, 1.0/2, -127, 0xFF, true, frc1),
	q(0x86, "ACTION", "Action", "action", "act", "", 0, encU8, 1, 0, 0xFB, true, frc1),
	q(0xA0, "BINARYDATA30", "Binary data30", "binary_data30", "bin30", "", 0, encBin30, 1, 0, 0, false, frcBin3),
	q(0xA1, "CONSUMPTION", "Consumption", "consumption", "E", "Wh", 0, encU32, 1, 0, 0xFFFFFFFF, true, frcF9),
	q(0xA2, "DATETIME", "DateTime", "datetime", "DateTime", "s", 0, encU32, 1, 0, 0xFFFFFFFF, true, frcF9),
	q(0xA3, "TIMESPAN_LONG", "Timespan long", "timespan_long", "t", "s", 4, encU32, 1.0/16, 0, 0xFFFFFFFF, true, frcF9),
	q(0xA4, "LATITUDE", "Latitude", "latitude", "LAT", "°", 7, encLatLon, 1, 0, 0, false, frcF9),
	q(0xA5, "LONGITUDE", "Longitude", "longitude", "LONG", "°", 7, encLatLon, 1, 0, 0, false, frcF9),
	q(0xA6, "TEMPERATURE_FLOAT", "Temperature", "temperature", "t", "°C", 7, encFloat, 1, 0, 0, false, frcF9),
	q(0xA7, "LENGTH", "Length", "length", "l", "m", 7, encFloat, 1, 0, 0, false, frcF9),
	q(0xC0, "DATA_BLOCK", "Data block", "data_block", "datablock", "", 0, encBlock, 1, 0, 0, false, nil),
}

var byType = func() (m [256]*Quantity) {
	for i := range table {
		m[table[i].Type] = &table[i]
	}
	return m
}()

// Lookup returns the quantity of a type code, or nil for an unknown type.
func Lookup(t uint8) *Quantity { return byType[t] }

// Quantities returns the whole table in type order.
func Quantities() []Quantity { return table[:] }

// Width is the value width of the quantity (-1: variable).
func (q *Quantity) Width() int { return Width(q.Type) }

// HasValue reports whether readings of this quantity are numbers (a data
// block is opaque and gives no reading).
func (q *Quantity) HasValue() bool { return q.enc != encBlock }

// Value converts a raw little-endian value of the quantity's width. ok is
// false for the quantity's "not available" value (no reading, not a zero) or
// a width mismatch.
func (q *Quantity) Value(raw []byte) (v float64, ok bool) {
	w := Width(q.Type)
	if w <= 0 || len(raw) != w {
		return 0, false
	}
	var r uint32
	switch w {
	case 1:
		r = uint32(raw[0])
	case 2:
		r = uint32(binary.LittleEndian.Uint16(raw))
	case 4:
		r = binary.LittleEndian.Uint32(raw)
	}
	return q.fromRaw(r)
}

func (q *Quantity) fromRaw(r uint32) (float64, bool) {
	if q.hasErr && r == q.errRaw {
		return 0, false
	}
	switch q.enc {
	case encU8, encU16, encU32:
		return float64(r)*q.scale + q.offset, true
	case encS16:
		return float64(int16(uint16(r))) * q.scale, true
	case encBin7:
		if r&0x80 != 0 {
			return 0, false
		}
		return float64(r & 0x7F), true
	case encBin30:
		if r&0x80000000 != 0 {
			return 0, false
		}
		return float64(r & 0x3FFFFFFF), true
	case encFloat:
		f := math.Float32frombits(r)
		if f != f || math.IsInf(float64(f), 0) {
			return 0, false
		}
		return float64(f), true
	case encLatLon:
		return latLon(r)
	}
	return 0, false
}

// latLon decodes the packed degrees/minutes format of types 0xA4 and 0xA5:
// degrees in bits 24-30, sign in bit 23 (1 = south/west), bit 22 set, whole
// minutes in bits 16-21 and ten-thousandths of a minute in bits 0-13.
func latLon(r uint32) (float64, bool) {
	if r&0xFF000000 == 0xFF000000 {
		return 0, false
	}
	deg := float64(r >> 24 & 0x7F)
	minutes := float64(r>>16&0x3F) + float64(r&0x3FFF)/10000
	v := deg + minutes/60
	if r&(1<<23) != 0 {
		v = -v
	}
	return v, true
}
