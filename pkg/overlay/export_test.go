package overlay

import (
	"encoding/hex"
	"slices"
	"strings"
)

// FastPathMapDump returns the fast path map's entries as sorted "key value"
// lines in hex, or "" without the fast path.
func FastPathMapDump(m *Manager) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fp == nil {
		return "", nil
	}
	var lines []string
	var k, v []byte
	it := m.fp.routes.Iterate()
	for it.Next(&k, &v) {
		lines = append(lines, hex.EncodeToString(k)+" "+hex.EncodeToString(v))
	}
	if err := it.Err(); err != nil {
		return "", err
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), nil
}
