package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/iotfabric/iotfabric/internal/testenv"
)

// browser is one headless Chromium (Debian's chromium) shared by the
// subtests of a test; each page is a tab of its own.
type browser struct {
	t      testing.TB
	ctx    context.Context
	cancel func()
}

// startBrowser starts chromium; it is closed at the end of the test.
func startBrowser(t testing.TB, width, height int) *browser {
	t.Helper()
	path := testenv.RequireProgram(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		chromedp.Flag("no-proxy-server", true),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	// The first action starts the browser; it lives as long as bctx.
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		acancel()
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{t: t, ctx: bctx, cancel: func() { bcancel(); acancel() }}
	t.Cleanup(b.cancel)
	return b
}

// tab is a browser tab.
type tab struct {
	t      testing.TB
	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	logs []string // the page's exceptions and console messages
}

// pageLog is what the page reported (exceptions, console messages).
func (tb *tab) pageLog() string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return strings.Join(tb.logs, "\n")
}

// newTab opens a tab showing url; it is closed at the end of the (sub)test.
func (b *browser) newTab(t testing.TB, url string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	tb := &tab{t: t, ctx: ctx, cancel: cancel}
	err := chromedp.Listen(ctx, func(ev any) {
		var line string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			line = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				line += " " + e.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			line = "console." + string(e.Type) + ":"
			for _, a := range e.Args {
				line += " " + string(a.Value) + a.Description
			}
		default:
			return
		}
		tb.mu.Lock()
		tb.logs = append(tb.logs, line)
		tb.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("page log:\n%s", tb.pageLog())
		}
	})
	tb.do(chromedp.Navigate(url))
	return tb
}

// close closes the tab (and its connections) before the end of the test.
func (tb *tab) close() { tb.cancel() }

// do runs actions, failing the test after 30 s.
func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("browser: %v", err)
	}
}

// run runs one action and returns its value, failing the test after 30 s.
func run[T any](tb *tab, a chromedp.Action[T]) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		tb.t.Fatalf("browser: %v", err)
	}
	return v
}

// waitJS waits until the JavaScript expression is true (polled on every
// animation frame), failing the test after timeout.
func (tb *tab) waitJS(timeout time.Duration, expr string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout))); err != nil {
		dctx, dcancel := context.WithTimeout(tb.ctx, 5*time.Second)
		defer dcancel()
		body, _ := chromedp.Run(dctx, chromedp.Evaluate[string]("document.querySelector('main').innerText"))
		tb.t.Fatalf("waiting for %s: %v\npage text:\n%s", expr, err, body)
	}
}

// text is the text of the first element the CSS selector sel selects.
func (tb *tab) text(sel string) string {
	tb.t.Helper()
	return run(tb, chromedp.Evaluate[string](fmt.Sprintf("(document.querySelector(%q) || {}).textContent || ''", sel)))
}

// goTo shows another page of the console (same document, new fragment).
func (tb *tab) goTo(fragment string) {
	tb.t.Helper()
	run(tb, chromedp.Evaluate[chromedp.Void](fmt.Sprintf("location.hash = %q", fragment)))
}

// screenshot writes the page as dir/name.png: to $IOTFABRIC_ARTIFACTS (or a
// temporary directory) and, when $IOTFABRIC_CONSOLE_DOCS names a directory
// (docs/console), there too.
func (tb *tab) screenshot(name string) {
	tb.t.Helper()
	png := run(tb, chromedp.CaptureScreenshot())
	dirs := []string{artifactsDir(tb.t)}
	if d := os.Getenv("IOTFABRIC_CONSOLE_DOCS"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			tb.t.Fatal(err)
		}
		tb.t.Logf("screenshot %s (%d bytes)", p, len(png))
	}
}

// artifactsDir is where the test's screenshots go.
func artifactsDir(t testing.TB) string {
	base := os.Getenv("IOTFABRIC_ARTIFACTS")
	if base == "" {
		return t.TempDir()
	}
	d := filepath.Join(base, "console", strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// eval evaluates a JavaScript expression; out, if not nil, receives its value.
func (tb *tab) eval(expr string, out any) {
	tb.t.Helper()
	v := run(tb, chromedp.Evaluate[json.RawMessage](expr))
	if out != nil {
		if err := json.Unmarshal(v, out); err != nil {
			tb.t.Fatalf("%s: %v (%s)", expr, err, v)
		}
	}
}
