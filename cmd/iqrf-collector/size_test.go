package main

import (
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"1", 1},
		{"1048576", 1 << 20},
		{"512B", 512},
		{"100MB", 100_000_000},
		{"100mb", 100_000_000},
		{"100 MB", 100_000_000},
		{"64MiB", 64 << 20},
		{"64mib", 64 << 20},
		{"64M", 64 << 20},
		{"1G", 1 << 30},
		{"1GiB", 1 << 30},
		{"1GB", 1_000_000_000},
		{"4k", 4096},
		{"4KB", 4000},
		{"2TiB", 2 << 40},
		{"3TB", 3_000_000_000_000},
		{" 7KiB ", 7 << 10},
		{"8388607TiB", 8388607 << 40},
	} {
		got, err := parseByteSize(c.in)
		if err != nil || int64(got) != c.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, msg string }{
		{"", "want a whole number"},
		{"MB", "want a whole number"},
		{"-1MB", "want a whole number"},
		{"1.5G", "want a whole number"},
		{"100XB", `unknown unit "XB"`},
		{"100 M B", `unknown unit "M B"`},
		{"0", "more than 0"},
		{"0MB", "more than 0"},
		{"8388608TiB", "too large"},
		{"99999999999999999999", "too large"},
	} {
		_, err := parseByteSize(c.in)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("parseByteSize(%q) = %v; want an error containing %q", c.in, err, c.msg)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	for _, c := range []struct {
		in   byteSize
		want string
	}{{100 << 20, "100MiB"}, {1 << 30, "1GiB"}, {2 << 40, "2TiB"}, {4096, "4KiB"}, {1536, "1536"}, {100_000_000, "100000000"}} {
		if got := c.in.String(); got != c.want {
			t.Errorf("%d.String() = %q, want %q", int64(c.in), got, c.want)
		}
		if back, err := parseByteSize(c.in.String()); err != nil || back != c.in {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", c.in.String(), back, err, int64(c.in))
		}
	}
}
