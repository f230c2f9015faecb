package server

import (
	"context"
	"net/http"
	"testing"
)

// Go's profiles are on the metrics listener only with metrics.pprof.
func TestPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		cfg := DefaultConfig()
		cfg.DataDir, cfg.API.Listen, cfg.Metrics.Listen, cfg.Metrics.Pprof = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", on
		c, err := Start(context.Background(), cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]int{"/debug/pprof/heap": http.StatusNotFound, "/debug/pprof/goroutine?debug=1": http.StatusNotFound, "/metrics": http.StatusOK} {
			if on && path != "/metrics" {
				want = http.StatusOK
			}
			resp, err := http.Get("http://" + c.MetricsAddr() + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("pprof %v: GET %s: %d, want %d", on, path, resp.StatusCode, want)
			}
		}
		c.Stop()
	}
}
