package main

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"testing"
)

type rawExec struct{}

func (rawExec) run(path string, env []string, stdin []byte) ([]byte, error) {
	cmd := exec.Command(path)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	return out.Bytes(), err
}

// testLog logs to stderr with IOTFABRIC_TEST_LOG=1, else nowhere.
func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("IOTFABRIC_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}
