package dpa

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// DottedHex formats b the way the IQRF Gateway Daemon's JSON API does:
// lowercase hex bytes separated by dots ("01.00.5e.01.ff.ff").
func DottedHex(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b) * 3)
	for i, c := range b {
		if i > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(hex.EncodeToString([]byte{c}))
	}
	return sb.String()
}

// ParseDottedHex parses dotted (or space-separated, or plain) hex bytes.
func ParseDottedHex(s string) ([]byte, error) {
	s = strings.NewReplacer(".", "", " ", "", "\n", "", "\t", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("dpa: hex %q: %w", s, err)
	}
	return b, nil
}
