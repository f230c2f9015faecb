package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestInstallCopiesItself(t *testing.T) {
	dir := t.TempDir()
	// An older plugin is replaced.
	if err := os.WriteFile(filepath.Join(dir, installName), []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := install(dir); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, installName))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("installed %d bytes (err %v), want the %d bytes of %s", len(got), err, len(want), self)
	}
	fi, _ := os.Stat(filepath.Join(dir, installName))
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v", fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	if err := install(filepath.Join(dir, "missing")); err == nil {
		t.Error("install into a missing directory succeeded")
	}
}
