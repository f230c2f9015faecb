// Package manpage renders a program's own --help text as a manual page
// (roff, man macros), so that the manual pages the packages install are made
// at build time from the one source the binaries print (make deb,
// internal/manpage/mangen). Lines in the Go flag package's format ("  -name
// type" followed by a tab-indented description) become tagged paragraphs;
// every other line is kept as it is, unfilled.
package manpage

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// Page is one manual page.
type Page struct {
	Name    string // the command's name
	Section string // 1: user commands, 8: system administration
	Summary string // one line, for NAME (whatis)
	Version string // e.g. "iotfabric 1.2.3"
	Date    string // YYYY-MM-DD
	Help    string // the command's --help output
	SeeAlso []string
}

// flagLine is a flag as the flag package prints it: "  -name" or "  -name type".
var flagLine = regexp.MustCompile(`^  -([A-Za-z0-9][-A-Za-z0-9_.]*)( .*)?$`)

// Roff returns the page's source.
func (p Page) Roff() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, ".TH %s %s %q %q \"iotfabric\"\n", strings.ToUpper(escape(p.Name)), p.Section, p.Date, p.Version)
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", escape(p.Name), escape(p.Summary))
	b.WriteString(".SH DESCRIPTION\n")
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(p.Help, "\r", ""), "\n"), "\n")
	nofill := false
	setFill := func(want bool) {
		if want && nofill {
			b.WriteString(".fi\n")
		} else if !want && !nofill {
			b.WriteString(".nf\n")
		}
		nofill = !want
	}
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := flagLine.FindStringSubmatch(l); m != nil && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "    \t") {
			setFill(true)
			fmt.Fprintf(&b, ".TP\n\\fB\\-%s\\fR", escape(m[1]))
			if arg := strings.TrimSpace(m[2]); arg != "" {
				fmt.Fprintf(&b, " \\fI%s\\fR", escape(arg))
			}
			b.WriteString("\n")
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "    \t") {
				i++
				b.WriteString(line(strings.TrimSpace(lines[i])))
			}
			continue
		}
		setFill(false)
		if strings.TrimSpace(l) == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString(line(l))
	}
	setFill(true)
	if len(p.SeeAlso) > 0 {
		b.WriteString(".SH SEE ALSO\n")
		for i, s := range p.SeeAlso {
			name, sec, _ := strings.Cut(s, "(")
			sep := ","
			if i == len(p.SeeAlso)-1 {
				sep = ""
			}
			fmt.Fprintf(&b, ".BR %s (%s%s\n", escape(name), strings.TrimSuffix(sec, ")"), sep)
		}
	}
	return b.Bytes()
}

// line is one input line of text: escaped, and protected when it would
// start with a control character.
func line(s string) string {
	s = escape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s + "\n"
}

// escape makes s literal text for roff: backslashes, and hyphens as minus
// signs (options, paths).
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}
