package gobgp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The embedded GoBGP server is reached through its gRPC API on a Unix socket
// (AddPathStream is the only way to hand it a batch of paths at once) in a
// private directory: iotfabric-bgp.<pid>.<random> in the temporary directory.
// A speaker that stops removes its directory; one whose process was killed
// cannot, so every speaker that starts removes the directories of processes
// that no longer exist.
const sockDirPrefix = "iotfabric-bgp."

// makeSockDir sweeps the directories of dead processes and makes the
// speaker's own.
func makeSockDir() (string, error) {
	sweepSockDirs(os.TempDir())
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d.", sockDirPrefix, os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("bgp: socket directory: %w", err)
	}
	return dir, nil
}

// sweepSockDirs removes the socket directories in tmp whose process is gone.
// It returns how many it removed. A directory it cannot judge (a name it did
// not make, a process it may not signal) is left alone.
func sweepSockDirs(tmp string) int {
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		pid, ok := sockDirPID(e.Name())
		if !ok || !e.IsDir() || processExists(pid) {
			continue
		}
		if os.RemoveAll(filepath.Join(tmp, e.Name())) == nil {
			n++
		}
	}
	return n
}

// sockDirPID is the process id in a socket directory's name.
func sockDirPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, sockDirPrefix)
	if !ok {
		return 0, false
	}
	p, _, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// processExists reports whether pid is a live process (or one this process
// may not signal, which is alive too).
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || !errors.Is(err, syscall.ESRCH)
}
