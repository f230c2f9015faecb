package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// FileSource reads the desired state from a YAML or JSON file and sends it
// again whenever the file changes (written in place, or replaced by rename as
// editors and config managers do). A file that does not parse is reported and
// ignored: the last good state stays in force.
type FileSource struct {
	Path string
	Log  *slog.Logger
}

// Run implements StateSource.
func (f *FileSource) Run(ctx context.Context, out chan<- overlay.State) error {
	log := f.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("state file: watch: %w", err)
	}
	defer w.Close()
	abs, err := filepath.Abs(f.Path)
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	// Watch the directory: a file replaced by rename keeps being followed.
	if err := w.Add(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("state file: watch %s: %w", filepath.Dir(abs), err)
	}
	var last []byte
	load := func() error {
		data, err := os.ReadFile(abs)
		if err != nil {
			return fmt.Errorf("state file: %w", err)
		}
		if last != nil && bytes.Equal(data, last) {
			return nil
		}
		if len(bytes.TrimSpace(data)) == 0 {
			// Most often a file caught between truncate and write. A state
			// that removes everything must say so: "networks: []".
			return fmt.Errorf("state file %s is empty (write \"networks: []\" to remove every network)", abs)
		}
		s, err := overlay.ParseState(data)
		if err != nil {
			return fmt.Errorf("state file %s: %w", abs, err)
		}
		last = data
		select {
		case out <- s:
		case <-ctx.Done():
		}
		return nil
	}
	if err := load(); err != nil {
		// The first read must succeed: a missing or broken file at start is
		// an operator error worth stopping for.
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) != abs || ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) == 0 {
				continue
			}
			if err := load(); err != nil {
				log.Error("vrouter: state file change ignored", "path", abs, "error", err)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("vrouter: state file watch", "error", err)
		}
	}
}
