package logkey_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// skipDirs are not checked, relative to the module root. proto/ holds
// generated code.
var skipDirs = map[string]bool{
	"proto": true,
}

// loggerArgs gives, for each *slog.Logger method (and slog package
// function) of the same name, the index of its first key-value argument.
var loggerArgs = map[string]int{
	"Debug": 1, "Info": 1, "Warn": 1, "Error": 1,
	"DebugContext": 2, "InfoContext": 2, "WarnContext": 2, "ErrorContext": 2,
	"Log":  3,
	"With": 0,
}

// attrFuncs are the slog functions whose first argument is a key.
var attrFuncs = map[string]bool{
	"String": true, "Int": true, "Int64": true, "Uint64": true, "Float64": true,
	"Bool": true, "Time": true, "Duration": true, "Any": true, "Group": true,
}

// TestNoLiteralKeys fails when non-test code outside skipDirs passes a
// string literal as a log/slog field key: keys come from this package.
func TestNoLiteralKeys(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || skipDirs[rel]) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		files++
		for _, bad := range literalKeys(t, p) {
			t.Errorf("%s:%d: string literal %s as a log key; use a logkey constant", rel, bad.line, bad.key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("checked %d files under %s; the walk did not find the module", files, root)
	}
}

type literalKey struct {
	line int
	key  string
}

// literalKeys parses one file and returns the string literals it passes
// as slog keys.
func literalKeys(t *testing.T, file string) []literalKey {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	// Names of the imported packages; a selector on one of them is a
	// package function, not a logger method (except for log/slog).
	slogName := ""
	imports := map[string]bool{}
	for _, imp := range f.Imports {
		p, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			t.Fatal(err)
		}
		name := path.Base(p)
		if imp.Name != nil {
			name = imp.Name.Name
		}
		imports[name] = true
		if p == "log/slog" {
			slogName = name
		}
	}
	var out []literalKey
	flag := func(e ast.Expr) {
		if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			out = append(out, literalKey{fset.Position(lit.Pos()).Line, lit.Value})
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			// slog.Attr{Key: "..."}
			if sel, ok := n.Type.(*ast.SelectorExpr); ok && isIdent(sel.X, slogName) && sel.Sel.Name == "Attr" {
				for _, el := range n.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok && isIdent(kv.Key, "Key") {
						flag(kv.Value)
					}
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			name := sel.Sel.Name
			pkg, isPkg := sel.X.(*ast.Ident)
			isPkg = isPkg && imports[pkg.Name]
			switch {
			case isPkg && pkg.Name == slogName && attrFuncs[name]:
				if len(n.Args) > 0 {
					flag(n.Args[0])
				}
			case isPkg && pkg.Name != slogName:
				// A function of another package (fmt, errors, status...).
			default:
				start, ok := loggerArgs[name]
				if !ok {
					return true
				}
				for i := start; i < len(n.Args); {
					arg := n.Args[i]
					flag(arg)
					if isAttr(arg, slogName) {
						i++
					} else {
						i += 2
					}
				}
			}
		}
		return true
	})
	return out
}

// isAttr reports whether e is syntactically an slog.Attr: an slog.Attr
// literal or a call to a function of log/slog or of this package.
func isAttr(e ast.Expr, slogName string) bool {
	switch e := e.(type) {
	case *ast.CompositeLit:
		sel, ok := e.Type.(*ast.SelectorExpr)
		return ok && isIdent(sel.X, slogName) && sel.Sel.Name == "Attr"
	case *ast.CallExpr:
		sel, ok := e.Fun.(*ast.SelectorExpr)
		return ok && (isIdent(sel.X, slogName) && attrFuncs[sel.Sel.Name] || isIdent(sel.X, "logkey"))
	}
	return false
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && name != "" && id.Name == name
}

// TestLiteralKeysFinds checks the checker on a file that breaks the rule in
// every way it looks for, and on one that keeps it.
func TestLiteralKeysFinds(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.go")
	src := `package bad

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

func f(ctx context.Context, log *slog.Logger, err error) {
	log.Info("a", "k1", 1)
	log.Warn("a", slog.String("k2", "v"), "k3", 2)
	log.ErrorContext(ctx, "a", "k4", err)
	log.Log(ctx, slog.LevelInfo, "a", "k5", 3)
	log = log.With("k6", "v")
	slog.Debug("a", "k7", 4)
	_ = slog.Attr{Key: "k8", Value: slog.IntValue(5)}
	_ = slog.Group("k9", slog.Int("k10", 6))
}
`
	if err := os.WriteFile(bad, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range literalKeys(t, bad) {
		got = append(got, k.key)
	}
	want := `"k1" "k2" "k3" "k4" "k5" "k6" "k7" "k8" "k9" "k10"`
	sort.Slice(got, func(i, j int) bool { return len(got[i]) < len(got[j]) || len(got[i]) == len(got[j]) && got[i] < got[j] })
	if s := strings.Join(got, " "); s != want {
		t.Errorf("found %s, want %s", s, want)
	}

	good := filepath.Join(dir, "good.go")
	src = `package good

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/iotfabric/iotfabric/pkg/logkey"
)

func f(log *slog.Logger, err error) {
	log.Info("a", logkey.Gateway, "gw1", logkey.Err, err)
	log.Warn("a", slog.String(logkey.Network, "n"), logkey.Reason, "why")
	log = log.With(logkey.Component, logkey.ComponentAgent)
	_ = fmt.Errorf("a %s", "b")
	_ = errors.New("a")
}
`
	if err := os.WriteFile(good, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := literalKeys(t, good); len(got) != 0 {
		t.Errorf("found %v in code that uses constant keys", got)
	}
}
