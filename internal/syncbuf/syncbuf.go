// Package syncbuf is a bytes.Buffer safe for concurrent use: a log
// destination that tests and test helpers read while a process or a
// goroutine writes to it.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects what is written to it; its methods may be called at once
// from several goroutines.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
