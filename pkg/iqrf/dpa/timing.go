package dpa

import "time"

// Timing constants from clibdpa (DpaTransaction2.cpp, IDpaTransaction2.h).
const (
	// SafetyTimeout is added to every estimate.
	SafetyTimeout = 40 * time.Millisecond
	// DefaultTimeout applies to requests answered without a confirmation
	// (the coordinator itself).
	DefaultTimeout = 500 * time.Millisecond
	// MinimalTimeout is the shortest timeout ever used.
	MinimalTimeout = 200 * time.Millisecond
)

// LowPower reports whether a confirmation comes from an STD+LP network: its
// timeslots are 8-10 (80-100 ms) where STD ones are 4-6.
func (f *Frame) LowPower() bool { return f.SlotLength >= 8 && f.SlotLength != 20 }

// ResponseTimeout is how long after the confirmation the response may take,
// as clibdpa estimates it: request routing, then the response's routing with
// the worst-case response slot, plus a safety margin.
func (f *Frame) ResponseTimeout() time.Duration {
	respSlot := 60 * time.Millisecond
	switch {
	case f.SlotLength == 20:
		respSlot = 200 * time.Millisecond
	case f.LowPower():
		respSlot = 110 * time.Millisecond
	}
	d := time.Duration(int(f.Hops)+1)*time.Duration(f.SlotLength)*10*time.Millisecond +
		time.Duration(int(f.HopsResponse)+1)*respSlot + SafetyTimeout
	if d < MinimalTimeout {
		d = MinimalTimeout
	}
	return d
}

// SlotForPData is the actual timeslot of a message with n bytes of PData
// (TG-4.32 §2.6.2).
func SlotForPData(n int, lowPower bool) time.Duration {
	var s time.Duration
	switch {
	case n < 17:
		s = 40 * time.Millisecond
	case n <= 40:
		s = 50 * time.Millisecond
	default:
		s = 60 * time.Millisecond
	}
	if lowPower {
		s += 40 * time.Millisecond
	}
	return s
}

// RoutingDone is when the network is free again after a request confirmed
// by f at tc and answered with a response of respPData bytes: step 7 of the
// official timing algorithm.
func (f *Frame) RoutingDone(tc time.Time, respPData int) time.Time {
	req := time.Duration(int(f.Hops)+1) * time.Duration(f.SlotLength) * 10 * time.Millisecond
	resp := time.Duration(int(f.HopsResponse)+1) * SlotForPData(respPData, f.LowPower())
	return tc.Add(req + resp)
}
