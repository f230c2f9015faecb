package manpage

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/iotfabric/iotfabric/internal/testenv"
)

// TestPagesOfTheBinaries builds every packaged binary, makes its page from
// its --help as make deb does, and checks the page: man(1) formats it
// without a warning (the check lintian makes), and every flag the binary
// prints is a tagged paragraph of the page.
func TestPagesOfTheBinaries(t *testing.T) {
	man := testenv.RequireProgram(t, "man", "man-db")
	dir := t.TempDir()
	args := []string{"build", "-o", dir + "/"}
	for _, c := range Commands {
		args = append(args, "../../cmd/"+c.Binary)
	}
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, c := range Commands {
		t.Run(c.Name, func(t *testing.T) {
			bin := filepath.Join(dir, c.Binary)
			p, err := FromBinary(c, bin, "iotfabric 0.0.0", "2026-01-01")
			if err != nil {
				t.Fatal(err)
			}
			roff := p.Roff()
			page := filepath.Join(dir, c.Name+"."+c.Section)
			if err := os.WriteFile(page, roff, 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", page)
			cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANROFFSEQ=", "MANWIDTH=80")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil || stderr.Len() > 0 {
				t.Fatalf("man --warnings: %v\n%s", err, stderr.String())
			}
			for _, m := range regexp.MustCompile(`(?m)^  -([A-Za-z0-9][-A-Za-z0-9_.]*)`).FindAllStringSubmatch(p.Help, -1) {
				if !bytes.Contains(roff, []byte(".TP\n\\fB\\-"+escape(m[1])+`\fR`)) && !strings.Contains(string(roff), escape("  -"+m[1])) {
					t.Errorf("flag -%s is not in the page", m[1])
				}
			}
			if !bytes.HasPrefix(roff, []byte(".TH "+strings.ToUpper(escape(c.Name))+" "+c.Section)) {
				t.Errorf("page header: %.60s", roff)
			}
		})
	}
}

// TestRoffEscapes: text that roff would take as requests or escapes stays
// text.
func TestRoffEscapes(t *testing.T) {
	p := Page{Name: "x", Section: "1", Summary: "s", Help: ".dot\n'quote\nback\\slash\n  -f string\n    \tflag -f\n"}
	got := string(p.Roff())
	for _, want := range []string{"\\&.dot\n", "\\&'quote\n", "back\\eslash\n", ".TP\n\\fB\\-f\\fR \\fIstring\\fR\nflag \\-f\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("page lacks %q:\n%s", want, got)
		}
	}
}
