package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// installName is the plugin's name in a CNI bin directory (the "type" in the network
// configuration).
const installName = "iotfabric"

// install copies the running binary to dir/iotfabric for an install-cni init container,
// whose image has no shell or cp: through a temporary file in dir and a rename, so that a
// runtime calling the plugin meanwhile runs either the old binary or the new one.
func install(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(dir, "."+installName+".tmp*")
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: no such file
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("install: copy to %s: %w", dir, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("install: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("install: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, installName)); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}
