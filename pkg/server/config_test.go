package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// metrics.listen "off" turns the metrics off from the file as from the flag.
func TestMetricsOffInConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "controller.yaml")
	if err := os.WriteFile(path, []byte("data_dir: "+dir+"\napi:\n  listen: 127.0.0.1:0\nmetrics:\n  listen: \"off\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("metrics.listen off refused: %v", err)
	}
	if cfg.MetricsEnabled() {
		t.Fatal("metrics enabled with metrics.listen off")
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Start(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsAddr() != "" {
		t.Errorf("metrics listen on %s", c.MetricsAddr())
	}
	cancel()
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	// Anything else must still be an address.
	cfg.Metrics.Listen = "of"
	if err := cfg.Validate(); err == nil {
		t.Fatal("metrics.listen \"of\" accepted")
	}
}

// liveness.interval: a duration from the file, 10s by default, positive.
func TestLivenessIntervalConfig(t *testing.T) {
	if got := DefaultConfig().Liveness.Interval; got != 10*time.Second {
		t.Errorf("default liveness.interval %v, want 10s", got)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "controller.yaml")
	if err := os.WriteFile(path, []byte("data_dir: "+dir+"\nliveness:\n  interval: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Liveness.Interval != 2*time.Second {
		t.Errorf("liveness.interval %v, want 2s", cfg.Liveness.Interval)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Liveness.Interval = 0
	if err := cfg.Validate(); err == nil {
		t.Fatal("liveness.interval 0 accepted")
	}
}
