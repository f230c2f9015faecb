package soak

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// keepEnv names a directory the soak copies the daemons' logs into at its
// end (controller.log, gw-0.log...), whether it passed or not.
const keepEnv = "IOTFABRIC_SOAK_KEEP"

// logCount is a number of lines and their bytes (newline included).
type logCount struct{ lines, bytes int64 }

func (c *logCount) add(n int) { c.lines++; c.bytes += int64(n) }

// logBreakdown breaks the daemons' logs (slog's text format) down per
// daemon, per level and per message: what fills them.
type logBreakdown struct {
	total  logCount
	daemon map[string]*logCount
	level  map[string]*logCount
	// msg is keyed by "kind component level msg", kind being "controller"
	// or "agent" (the three agents together).
	msg map[string]*logCount
	// other counts the lines that are not slog records (a panic's trace,
	// a library writing to stderr), with the first as an example.
	other        logCount
	otherExample string
}

func newLogBreakdown() *logBreakdown {
	return &logBreakdown{daemon: map[string]*logCount{}, level: map[string]*logCount{}, msg: map[string]*logCount{}}
}

func count(m map[string]*logCount, k string, n int) {
	c := m[k]
	if c == nil {
		c = &logCount{}
		m[k] = c
	}
	c.add(n)
}

// add counts the log of one daemon, kind "controller" or "agent".
func (b *logBreakdown) add(daemon, kind string, r io.Reader) error {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			n := len(line)
			b.total.add(n)
			count(b.daemon, daemon, n)
			f := logFields(strings.TrimSuffix(line, "\n"))
			lvl, ok := f["level"]
			if !ok || f["time"] == "" {
				b.other.add(n)
				if b.otherExample == "" {
					b.otherExample = strings.TrimSpace(line)
				}
			} else {
				count(b.level, lvl, n)
				comp := f["component"]
				if comp == "" {
					comp = "-"
				}
				msg := f["msg"]
				if f["suppressed"] != "" {
					msg += " (suppressed=N summary)"
				}
				count(b.msg, fmt.Sprintf("%s %s %s %q", kind, comp, lvl, msg), n)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// logFields parses one line of slog's text format into its top-level
// keys and values (values unquoted). Keys repeated keep their first value.
func logFields(line string) map[string]string {
	f := map[string]string{}
	for s := line; s != ""; {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
			break
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		if _, dup := f[key]; !dup {
			f[key] = val
		}
	}
	return f
}

// format prints the breakdown: per daemon, per level, the top messages by
// bytes, each line indented.
func (b *logBreakdown) format(top int) string {
	var w strings.Builder
	sorted := func(m map[string]*logCount) []string {
		ks := make([]string, 0, len(m))
		for k := range m {
			ks = append(ks, k)
		}
		slices.SortFunc(ks, func(x, y string) int {
			return cmp.Or(cmp.Compare(m[y].bytes, m[x].bytes), strings.Compare(x, y))
		})
		return ks
	}
	fmt.Fprintf(&w, "  log: %d bytes, %d lines\n", b.total.bytes, b.total.lines)
	for _, k := range sorted(b.daemon) {
		fmt.Fprintf(&w, "    %-12s %9d bytes %7d lines\n", k, b.daemon[k].bytes, b.daemon[k].lines)
	}
	for _, k := range sorted(b.level) {
		fmt.Fprintf(&w, "    level=%-6s %9d bytes %7d lines\n", k, b.level[k].bytes, b.level[k].lines)
	}
	if b.other.lines > 0 {
		fmt.Fprintf(&w, "    not slog   %9d bytes %7d lines, first: %.200s\n", b.other.bytes, b.other.lines, b.otherExample)
	}
	fmt.Fprintf(&w, "    top messages (kind component level msg):\n")
	for i, k := range sorted(b.msg) {
		if i == top {
			break
		}
		fmt.Fprintf(&w, "    %9d bytes %7d lines  %s\n", b.msg[k].bytes, b.msg[k].lines, k)
	}
	return w.String()
}

func TestLogBreakdown(t *testing.T) {
	b := newLogBreakdown()
	ctl := `time=2026-11-28T23:00:00.000Z level=INFO msg=call component=audit identity=admin method=/x object=a code=OK
time=2026-11-28T23:00:00.000Z level=INFO msg=call component=audit identity=admin method=/x object=b code=OK
time=2026-11-28T23:00:00.000Z level=WARN msg="gateway stream ended" component=controller err="a b=c \"q\""
time=2026-11-28T23:00:01.000Z level=WARN msg="gateway stream ended" component=controller suppressed=7 interval=10s
panic: boom
`
	if err := b.add("controller", "controller", strings.NewReader(ctl)); err != nil {
		t.Fatal(err)
	}
	agent := "time=2026-11-28T23:00:00.000Z level=INFO msg=registered component=vrouter-agent gateway=gw-0\n"
	if err := b.add("gw-0", "agent", strings.NewReader(agent)); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(ctl, "\n")
	if b.total.lines != 6 || b.total.bytes != int64(len(ctl)+len(agent)) {
		t.Errorf("total %+v, want 6 lines, %d bytes", b.total, len(ctl)+len(agent))
	}
	if c := b.msg[`controller audit INFO "call"`]; c == nil || c.lines != 2 || c.bytes != int64(len(lines[0])+len(lines[1])) {
		t.Errorf("audit calls: %+v", c)
	}
	if c := b.msg[`controller controller WARN "gateway stream ended"`]; c == nil || c.lines != 1 {
		t.Errorf("stream ended: %+v", c)
	}
	if c := b.msg[`controller controller WARN "gateway stream ended (suppressed=N summary)"`]; c == nil || c.lines != 1 {
		t.Errorf("summary: %+v", c)
	}
	if c := b.msg[`agent vrouter-agent INFO "registered"`]; c == nil || c.lines != 1 {
		t.Errorf("agent: %+v", c)
	}
	if b.other.lines != 1 || b.otherExample != "panic: boom" {
		t.Errorf("not slog: %+v %q", b.other, b.otherExample)
	}
	if c := b.level["WARN"]; c == nil || c.lines != 2 {
		t.Errorf("WARN: %+v", c)
	}
	if f := logFields(strings.TrimSuffix(lines[2], "\n")); f["err"] != `a b=c "q"` || f["component"] != "controller" {
		t.Errorf("fields: %q", f)
	}
	out := b.format(2)
	if !strings.Contains(out, `audit INFO "call"`) || strings.Count(out, "bytes") != 2+1+2+1+2 {
		t.Errorf("format:\n%s", out)
	}
}

// keepLogs copies the daemons' logs into dir.
func keepLogs(t *testing.T, dir string, ps []*proc) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Error(err)
		return
	}
	for _, p := range ps {
		b, err := os.ReadFile(p.log)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, p.name+".log"), b, 0o644)
		}
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("daemons' logs kept in %s", dir)
}
