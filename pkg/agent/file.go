package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// FileSource is the Source of vrouter-agent --state: a hand-written desired
// state in a YAML or JSON file, read again whenever the file changes (written
// in place, or replaced by rename as editors and config managers do). A file
// that does not parse is reported and ignored: the last good state stays in
// force.
type FileSource struct {
	path    string // absolute
	log     *slog.Logger
	changed chan struct{}

	// mu guards the fields below.
	mu    sync.Mutex
	state overlay.State
	gen   uint64
	raw   []byte // the file's content behind state
}

// OpenStateFile reads and parses the state file. The first read must succeed:
// a missing or broken file at start is an operator error worth stopping for.
func OpenStateFile(path string, log *slog.Logger) (*FileSource, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	f := &FileSource{path: abs, log: log.With(logkey.Component, logkey.ComponentStateFile), changed: make(chan struct{}, 1)}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

// Changed implements Source; it is signalled once the file is first read.
func (f *FileSource) Changed() <-chan struct{} { return f.changed }

// Desired implements Source: the last good state of the file.
func (f *FileSource) Desired(context.Context) (overlay.State, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, f.gen, nil
}

// load reads the file and, when it holds a new valid state, makes it the
// desired one.
func (f *FileSource) load() error {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	f.mu.Lock()
	same := f.raw != nil && bytes.Equal(data, f.raw)
	f.mu.Unlock()
	if same {
		return nil
	}
	if len(bytes.TrimSpace(data)) == 0 {
		// Most often a file caught between truncate and write. A state
		// that removes everything must say so: "networks: []".
		return fmt.Errorf("state file %s is empty (write \"networks: []\" to remove every network)", f.path)
	}
	s, err := overlay.ParseState(data, f.log)
	if err != nil {
		return fmt.Errorf("state file %s: %w", f.path, err)
	}
	f.mu.Lock()
	f.state, f.raw = s, data
	f.gen++
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
	return nil
}

// Run follows the file until ctx ends (it then returns nil) or the watch
// cannot be set up.
func (f *FileSource) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("state file: watch: %w", err)
	}
	defer w.Close()
	// Watch the directory: a file replaced by rename keeps being followed.
	if err := w.Add(filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("state file: watch %s: %w", filepath.Dir(f.path), err)
	}
	// A change between the first read and the watch.
	if err := f.load(); err != nil {
		f.log.Error("state file change ignored", logkey.Path, f.path, logkey.Err, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) != f.path || ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) == 0 {
				continue
			}
			if err := f.load(); err != nil {
				f.log.Error("state file change ignored", logkey.Path, f.path, logkey.Err, err)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			f.log.Warn("state file watch", logkey.Err, err)
		}
	}
}

// RunStateFile applies the state file through a until ctx ends (then it
// returns nil) or the file cannot be followed: vrouter-agent --state.
func RunStateFile(ctx context.Context, f *FileSource, a Applier, log *slog.Logger, resync time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := NewReconciler(f, a, log, resync, nil)
	errc := make(chan error, 2)
	go func() { errc <- f.Run(ctx) }()
	go func() { errc <- r.Run(ctx) }()
	err := <-errc
	if err == nil && ctx.Err() == nil {
		err = errors.New("state file: the watch ended")
	}
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}
