package server

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// api.keepalive: defaults below the agents' 30 s pings, durations from the
// file, positive.
func TestKeepaliveConfig(t *testing.T) {
	want := KeepaliveConfig{MinTime: 10 * time.Second, Time: 60 * time.Second, Timeout: 20 * time.Second}
	if got := DefaultConfig().API.Keepalive; got != want {
		t.Errorf("default api.keepalive %+v, want %+v", got, want)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "controller.yaml")
	if err := os.WriteFile(path, []byte("data_dir: "+dir+"\napi:\n  keepalive:\n    min_time: 1s\n    time: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want = KeepaliveConfig{MinTime: time.Second, Time: 2 * time.Second, Timeout: 20 * time.Second}
	if cfg.API.Keepalive != want {
		t.Errorf("api.keepalive %+v, want %+v", cfg.API.Keepalive, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.API.Keepalive.Timeout = 0
	if err := cfg.Validate(); err == nil {
		t.Fatal("api.keepalive.timeout 0 accepted")
	}
}
