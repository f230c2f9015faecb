package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/iotfabric/iotfabric/internal/atomicfile"
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
	bin, err := os.ReadFile(self)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, installName), bin, 0o755); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}
