// Package testenv decides what a test does when something it needs from the machine is
// missing: root, or a program from a Debian package. Run by hand, such a test is skipped
// with a message saying what to install; under `make test` (IOTFABRIC_TEST_STRICT=1) it
// fails instead, so that a missing install step cannot pass as a skipped test.
//
// It owns only that decision; it starts nothing and touches no files.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// StrictEnv is the environment variable that turns skips into failures.
const StrictEnv = "IOTFABRIC_TEST_STRICT"

// Strict reports whether missing prerequisites fail tests instead of skipping them.
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// Missing skips the test, or fails it when Strict, with the reason and what to do.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (%s=1: `make test` needs it; run `make deps` as root)", msg, StrictEnv)
	}
	t.Skip(msg)
}

// RequireRoot skips (or fails, when Strict) a test that needs root.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root (%s)", why)
	}
}

// RequireProgram returns the path of program, or skips (fails, when Strict) the test
// saying which Debian package provides it.
func RequireProgram(t testing.TB, program, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		Missing(t, "%s not found (Debian package %s, listed in scripts/deps)", program, debianPackage)
	}
	return p
}

// RequireFile skips (fails, when Strict) the test when path does not exist.
func RequireFile(t testing.TB, path, debianPackage string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, "%s not found (Debian package %s, listed in scripts/deps)", path, debianPackage)
	}
}
