package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// byteSize is a flag value for a size in bytes: a whole number, optionally
// followed by a unit. Units are case-insensitive; K, M, G and T, and KiB,
// MiB, GiB and TiB, are powers of 1024; KB, MB, GB and TB are powers of 1000
// (as GNU coreutils reads them). B or no unit means bytes.
type byteSize int64

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

const sizeUnitList = "B, K/KiB, KB, M/MiB, MB, G/GiB, GB, T/TiB, TB"

var errSizeSyntax = errors.New("want a whole number of bytes, optionally with a unit (" + sizeUnitList + "), e.g. 100MB, 64MiB, 1G or 1048576")

// parseByteSize reads s as a byteSize; the result is positive.
func parseByteSize(s string) (byteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errSizeSyntax
	}
	unit := strings.TrimSpace(t[i:])
	if strings.HasPrefix(unit, ".") || strings.HasPrefix(unit, ",") {
		return 0, errSizeSyntax
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q: %w", unit, errSizeSyntax)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%s is too large", s)
	}
	if n == 0 {
		return 0, errors.New("must be more than 0 bytes")
	}
	return byteSize(n * mult), nil
}

// String gives the size with the largest binary unit that divides it.
func (b byteSize) String() string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Set implements flag.Value.
func (b *byteSize) Set(s string) error {
	v, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}
