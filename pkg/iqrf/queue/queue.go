// Package queue is a bounded on-disk FIFO with named readers, used to store
// readings before delivery so that nothing is lost while an uplink is down or
// the collector restarts.
//
// Records are appended to segment files (length, CRC-32C, payload). Each
// reader has a cursor file holding the sequence number of the first record
// it has not yet had acknowledged; reading ahead is in memory, so after a
// crash or a failed delivery the reader starts again at its last
// acknowledgement (at-least-once delivery). When the queue grows past its
// bound the oldest segment is removed and the records that some reader had
// not yet delivered are counted as dropped.
//
// Writes go to the page cache: the queue survives the collector being
// killed. With Options.Sync every append is also fsynced (survives power
// loss, costs a disk flush per poll).
package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

const (
	headerLen = 8
	// MaxRecord bounds one record.
	MaxRecord = 1 << 20
	segSuffix = ".seg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("queue closed")

// Options bound a queue.
type Options struct {
	// MaxBytes bounds the segment files together (default 100 MB).
	MaxBytes int64
	// SegmentBytes is the size at which a new segment starts (default
	// MaxBytes/16, at least 4 KiB, at most 8 MiB).
	SegmentBytes int64
	// Sync fsyncs every append.
	Sync bool
}

type segment struct {
	first uint64 // sequence number of its first record
	count uint64
	size  int64
	path  string
}

func (s *segment) end() uint64 { return s.first + s.count }

// Queue is safe for concurrent use; each Reader is used by one goroutine.
type Queue struct {
	dir string
	opt Options

	mu      sync.Mutex // guards the fields below
	segs    []*segment
	w       *os.File // the last segment, open for appending
	total   int64
	tail    uint64 // next sequence number
	readers map[string]*Reader
	dropped uint64
	notify  chan struct{} // closed and replaced on every append
	closed  bool
}

// Open opens (or creates) the queue in dir with the named readers.
func Open(dir string, opt Options, readers ...string) (*Queue, error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = 100 << 20
	}
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = min(max(opt.MaxBytes/16, 4096), 8<<20)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	q := &Queue{dir: dir, opt: opt, readers: map[string]*Reader{}, notify: make(chan struct{})}
	if err := q.load(); err != nil {
		q.closeFiles()
		return nil, err
	}
	for _, name := range readers {
		if err := q.addReader(name); err != nil {
			q.closeFiles()
			return nil, err
		}
	}
	return q, nil
}

func (q *Queue) load() error {
	names, err := filepath.Glob(filepath.Join(q.dir, "*"+segSuffix))
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	for _, p := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(p), segSuffix), 10, 64)
		if err != nil {
			continue
		}
		q.segs = append(q.segs, &segment{first: first, path: p})
	}
	slices.SortFunc(q.segs, func(a, b *segment) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	for i, s := range q.segs {
		count, size, err := scan(s.path)
		if err != nil {
			return err
		}
		if i+1 < len(q.segs) && s.first+count > q.segs[i+1].first {
			return fmt.Errorf("queue: segment %s overlaps the next one", s.path)
		}
		s.count, s.size = count, size
		q.total += size
	}
	if n := len(q.segs); n > 0 {
		last := q.segs[n-1]
		q.tail = last.end()
		// Drop a torn record at the end of the last segment.
		if err := os.Truncate(last.path, last.size); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		f, err := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		q.w = f
	}
	return nil
}

// scan counts the valid records of a segment file and the bytes they take.
func scan(path string) (count uint64, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("queue: %w", err)
	}
	defer f.Close()
	var off int64
	var hdr [headerLen]byte
	buf := make([]byte, 0, 256)
	for {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return count, off, nil
		}
		n := binary.LittleEndian.Uint32(hdr[:4])
		if n > MaxRecord {
			return count, off, nil
		}
		buf = slices.Grow(buf[:0], int(n))[:n]
		if _, err := f.ReadAt(buf, off+headerLen); err != nil {
			return count, off, nil
		}
		if crc32.Checksum(buf, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			return count, off, nil
		}
		off += headerLen + int64(n)
		count++
	}
}

func (q *Queue) head() uint64 {
	if len(q.segs) == 0 {
		return q.tail
	}
	return q.segs[0].first
}

func (q *Queue) addReader(name string) error {
	if name == "" || strings.ContainsAny(name, "/.") {
		return fmt.Errorf("queue: bad reader name %q", name)
	}
	f, err := os.OpenFile(filepath.Join(q.dir, name+".cursor"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	r := &Reader{q: q, name: name, cursor: f}
	var b [12]byte
	acked := q.head()
	if n, _ := f.ReadAt(b[:], 0); n == len(b) && crc32.Checksum(b[:8], castagnoli) == binary.LittleEndian.Uint32(b[8:]) {
		acked = binary.LittleEndian.Uint64(b[:8])
	}
	r.acked = min(max(acked, q.head()), q.tail)
	r.pos = r.acked
	q.readers[name] = r
	return nil
}

// Append adds records at the end, in order.
func (q *Queue) Append(recs ...[]byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	for _, rec := range recs {
		if len(rec) > MaxRecord {
			return fmt.Errorf("queue: record of %d bytes, more than %d", len(rec), MaxRecord)
		}
		if q.w == nil || q.segs[len(q.segs)-1].size >= q.opt.SegmentBytes {
			if err := q.rotateLocked(); err != nil {
				return err
			}
		}
		s := q.segs[len(q.segs)-1]
		buf := make([]byte, headerLen+len(rec))
		binary.LittleEndian.PutUint32(buf, uint32(len(rec)))
		binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(rec, castagnoli))
		copy(buf[headerLen:], rec)
		if _, err := q.w.Write(buf); err != nil {
			// Cut a partial write so the segment stays readable.
			os.Truncate(s.path, s.size)
			return fmt.Errorf("queue: append: %w", err)
		}
		s.size += int64(len(buf))
		s.count++
		q.total += int64(len(buf))
		q.tail++
	}
	if q.opt.Sync && q.w != nil {
		if err := q.w.Sync(); err != nil {
			return fmt.Errorf("queue: sync: %w", err)
		}
	}
	q.enforceBoundLocked()
	close(q.notify)
	q.notify = make(chan struct{})
	return nil
}

func (q *Queue) rotateLocked() error {
	if q.w != nil {
		if err := q.w.Close(); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		q.w = nil
	}
	p := filepath.Join(q.dir, fmt.Sprintf("%020d%s", q.tail, segSuffix))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	q.w = f
	q.segs = append(q.segs, &segment{first: q.tail, path: p})
	return nil
}

// enforceBoundLocked removes the oldest segments while the queue is over
// its bound, counting records some reader had not delivered as dropped.
func (q *Queue) enforceBoundLocked() {
	for q.total > q.opt.MaxBytes && len(q.segs) > 1 {
		s := q.segs[0]
		slowest := q.tail
		for _, r := range q.readers {
			slowest = min(slowest, r.acked)
		}
		if slowest < s.end() {
			q.dropped += s.end() - max(slowest, s.first)
		}
		q.removeFirstLocked()
		for _, r := range q.readers {
			if r.acked < s.end() {
				r.acked = s.end()
				r.persist()
			}
			if r.pos < s.end() {
				r.pos = s.end()
			}
			if r.fseg == s {
				r.closeFile()
			}
		}
	}
}

func (q *Queue) removeFirstLocked() {
	s := q.segs[0]
	os.Remove(s.path)
	q.total -= s.size
	q.segs = q.segs[1:]
}

// collectLocked removes segments every reader has delivered (never the one
// being written).
func (q *Queue) collectLocked() {
	for len(q.segs) > 1 {
		s := q.segs[0]
		for _, r := range q.readers {
			if r.acked < s.end() {
				return
			}
		}
		for _, r := range q.readers {
			if r.f != nil && r.fseg == s {
				r.closeFile()
			}
		}
		q.removeFirstLocked()
	}
}

// Dropped is the number of records removed before every reader had them.
func (q *Queue) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Bytes is the size of the segment files.
func (q *Queue) Bytes() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.total
}

// Reader returns the named reader given to Open, or nil.
func (q *Queue) Reader(name string) *Reader {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.readers[name]
}

func (q *Queue) closeFiles() {
	if q.w != nil {
		q.w.Close()
	}
	for _, r := range q.readers {
		r.closeFile()
		r.cursor.Close()
	}
}

// Close closes the files; blocked readers return ErrClosed.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	var err error
	if q.w != nil {
		err = q.w.Sync()
	}
	for _, r := range q.readers {
		r.cursor.Sync()
	}
	q.closeFiles()
	close(q.notify)
	return err
}

// Reader reads the queue from its last acknowledged record.
type Reader struct {
	q      *Queue
	name   string
	cursor *os.File

	// Guarded by q.mu.
	acked uint64 // first record not acknowledged
	pos   uint64 // next record to hand out
	f     *os.File
	fseg  *segment
	fseq  uint64 // record at foff
	foff  int64
}

func (r *Reader) closeFile() {
	if r.f != nil {
		r.f.Close()
		r.f, r.fseg = nil, nil
	}
}

func (r *Reader) persist() {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], r.acked)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	r.cursor.WriteAt(b[:], 0)
}

// Pending is the number of records not yet acknowledged.
func (r *Reader) Pending() uint64 {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	return r.q.tail - r.acked
}

// Next waits until records past the reader's position exist and returns up
// to max of them (copies) with the sequence number of the first. It
// advances the position, not the acknowledgement.
func (r *Reader) Next(ctx context.Context, max int) ([][]byte, uint64, error) {
	q := r.q
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, 0, ErrClosed
		}
		if r.pos < q.tail {
			first := r.pos
			recs, err := r.readLocked(max)
			q.mu.Unlock()
			return recs, first, err
		}
		ch := q.notify
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

func (r *Reader) readLocked(max int) ([][]byte, error) {
	q := r.q
	var out [][]byte
	for len(out) < max && r.pos < q.tail {
		i, ok := slices.BinarySearchFunc(q.segs, r.pos, func(s *segment, pos uint64) int {
			switch {
			case s.end() <= pos:
				return -1
			case s.first > pos:
				return 1
			}
			return 0
		})
		if !ok {
			return out, fmt.Errorf("queue: record %d is in no segment", r.pos)
		}
		s := q.segs[i]
		if r.fseg != s || r.fseq > r.pos {
			r.closeFile()
			f, err := os.Open(s.path)
			if err != nil {
				return out, fmt.Errorf("queue: %w", err)
			}
			r.f, r.fseg, r.fseq, r.foff = f, s, s.first, 0
		}
		for r.fseq <= r.pos && len(out) < max && r.fseq < s.end() {
			var hdr [headerLen]byte
			if _, err := r.f.ReadAt(hdr[:], r.foff); err != nil {
				return out, fmt.Errorf("queue: read %s: %w", s.path, err)
			}
			n := binary.LittleEndian.Uint32(hdr[:4])
			rec := make([]byte, n)
			if _, err := r.f.ReadAt(rec, r.foff+headerLen); err != nil && !errors.Is(err, io.EOF) {
				return out, fmt.Errorf("queue: read %s: %w", s.path, err)
			}
			r.foff += headerLen + int64(n)
			r.fseq++
			if r.fseq-1 == r.pos {
				out = append(out, rec)
				r.pos++
			}
		}
	}
	return out, nil
}

// Ack acknowledges every record before sequence number end: they are
// delivered.
func (r *Reader) Ack(end uint64) {
	q := r.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if end <= r.acked {
		return
	}
	r.acked = min(end, r.pos)
	r.persist()
	q.collectLocked()
}

// Rewind moves the position back to the first unacknowledged record, to
// deliver again what a failed delivery may have lost.
func (r *Reader) Rewind() {
	r.q.mu.Lock()
	r.pos = r.acked
	r.q.mu.Unlock()
}
