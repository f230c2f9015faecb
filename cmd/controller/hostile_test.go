package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/internal/proctest"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// hostileSeconds is how long a hostile run lasts: $IOTFABRIC_HOSTILE_SECONDS
// (make hostile-logs: 600), else 10.
func hostileSeconds() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("IOTFABRIC_HOSTILE_SECONDS")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 10 * time.Second
}

var servingMetricsRE = regexp.MustCompile(`msg="controller serving" api=(\S+) metrics=(\S+)`)

// A flood of refused calls (a viewer creating networks, an admin sending
// invalid ones, with names of 64 KiB) writes a bounded log: the audit lines
// of each caller and outcome are summarised per interval, long values are
// cut, and the API's request metric still counts every call. It prints the
// log's bytes per minute; the bound is 1 MB/minute (10 MB in 10 minutes).
func TestRefusedCallFloodLogBounded(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	srv := ca.Issue("127.0.0.1")
	conf := filepath.Join(dir, "controller.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`
data_dir: %s
api:
  listen: 127.0.0.1:0
  tls: {cert: %s, key: %s, ca: %s}
metrics:
  listen: 127.0.0.1:0
`, filepath.Join(dir, "data"), srv.Cert, srv.Key, srv.CA)), 0o600)
	var logBytes, logLines atomic.Int64
	var mu sync.Mutex
	var summaries []string
	p := proctest.Start(t, []string{"IOTFABRIC_CONTROLLER_ARGS=--config\n" + conf}, true, func(line string) (string, bool) {
		logBytes.Add(int64(len(line) + 1))
		logLines.Add(1)
		if strings.Contains(line, "suppressed=") {
			mu.Lock()
			summaries = append(summaries, line)
			mu.Unlock()
		}
		if m := servingMetricsRE.FindStringSubmatch(line); m != nil {
			return m[1] + " " + m[2], true
		}
		return "", false
	})
	apiAddr, metricsAddr, _ := strings.Cut(p.Ready, " ")
	dial := func(f tlsconfig.Files) v1.NetworkServiceClient {
		tc, err := tlsconfig.Client(f)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(apiAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return v1.NewNetworkServiceClient(conn)
	}
	viewer, admin := dial(ca.Viewer("mallory")), dial(ca.Admin("clumsy"))
	start, startBytes := time.Now(), logBytes.Load()
	d := hostileSeconds()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	long := strings.Repeat("x", 64<<10)
	var denied, invalid atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, err := viewer.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: long, Subnets: []string{"10.0.0.0/24"}}})
				if status.Code(err) == codes.PermissionDenied {
					denied.Add(1)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, err := admin.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "bad name " + long}})
				if status.Code(err) == codes.InvalidArgument {
					invalid.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(11 * time.Second) // the last interval's summaries
	took := time.Since(start)
	written := logBytes.Load() - startBytes
	perMinute := float64(written) / took.Minutes()
	t.Logf("refused-call flood: %d denied and %d invalid calls in %s; the controller wrote %d log lines, %d bytes: %.0f bytes/minute, %.1f MB per 10 minutes",
		denied.Load(), invalid.Load(), d, logLines.Load(), written, perMinute, perMinute*10/1e6)
	if denied.Load() < 100 || invalid.Load() < 100 {
		t.Fatalf("not a flood: %d denied, %d invalid", denied.Load(), invalid.Load())
	}
	if perMinute > 1e6 {
		t.Errorf("%.0f bytes of log per minute, want at most 1 MB", perMinute)
	}
	mu.Lock()
	if len(summaries) == 0 {
		t.Error("no summary line (suppressed=N)")
	}
	mu.Unlock()
	// Every call is counted in the metric.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	counted := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "iotfabric_api_requests_total{") || !strings.Contains(l, `method="CreateNetwork"`) {
			continue
		}
		f := strings.Fields(l)
		n, _ := strconv.ParseFloat(f[len(f)-1], 64)
		for _, c := range []string{"PermissionDenied", "InvalidArgument"} {
			if strings.Contains(l, `code="`+c+`"`) {
				counted[c] += int64(n)
			}
		}
	}
	// Calls cut short by the end of the run may be counted without the
	// client seeing their answer.
	if counted["PermissionDenied"] < denied.Load() || counted["InvalidArgument"] < invalid.Load() {
		t.Errorf("metric counted %v, clients saw %d denied and %d invalid", counted, denied.Load(), invalid.Load())
	}
}
