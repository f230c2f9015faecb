package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestMain lets the test binary stand in for iotfabricctl itself, for the
// tests that run it as a separate process.
func TestMain(m *testing.M) {
	if os.Getenv("IOTFABRICCTL_TEST_MAIN") == "1" {
		main()
	}
	// No test reads the config file of whoever runs them; those that want one set their own.
	dir, err := os.MkdirTemp("", "iotfabricctl-test")
	if err != nil {
		panic(err)
	}
	os.Setenv(configEnv, filepath.Join(dir, "config.yaml"))
	rc := m.Run()
	os.RemoveAll(dir)
	os.Exit(rc)
}

// tree builds the command tree with cobra's own help and completion commands added.
func tree(t *testing.T) *cobra.Command {
	t.Helper()
	root := newCLI(io.Discard).rootCommand()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

// commands lists every command of the tree, the root first.
func commands(root *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{root}
	for _, c := range root.Commands() {
		out = append(out, commands(c)...)
	}
	return out
}

// argsOf turns a command into the words that call it: ["network", "create"].
func argsOf(c *cobra.Command) []string {
	return strings.Fields(strings.TrimPrefix(c.CommandPath(), c.Root().Name()))
}

func TestEveryCommandAndFlagHasHelp(t *testing.T) {
	root := tree(t)
	n := 0
	for _, c := range commands(root) {
		if c.Hidden {
			continue
		}
		n++
		if strings.TrimSpace(c.Short) == "" {
			t.Errorf("%q has no Short help", c.CommandPath())
		}
		check := func(f *pflag.Flag) {
			if strings.TrimSpace(f.Usage) == "" {
				t.Errorf("%q: flag --%s has no usage", c.CommandPath(), f.Name)
			}
		}
		c.LocalFlags().VisitAll(check)
		c.InheritedFlags().VisitAll(check)

		// -h on the command itself prints its help, naming every flag.
		var out, errb bytes.Buffer
		rc := run(append(argsOf(c), "-h"), &out, &errb)
		if rc != 0 || errb.Len() != 0 || !strings.Contains(out.String(), "Usage:") {
			t.Errorf("%q -h: rc %d, stdout %q, stderr %q", c.CommandPath(), rc, out.String(), errb.String())
			continue
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden && !strings.Contains(out.String(), "--"+f.Name) {
				t.Errorf("%q -h does not mention --%s", c.CommandPath(), f.Name)
			}
		})
	}
	// The nouns, their verbs, completion and its four shells, help.
	if n < 30 {
		t.Errorf("walked %d commands; the tree looks incomplete", n)
	}
}

func TestRootHelpListsTheNouns(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		var out, errb bytes.Buffer
		if rc := run(args, &out, &errb); rc != 0 {
			t.Fatalf("%v: rc %d, stderr %q", args, rc, errb.String())
		}
		for _, noun := range []string{"network", "gateway", "endpoint", "ipam", "peer", "route", "completion"} {
			if !strings.Contains(out.String(), "\n  "+noun+" ") {
				t.Errorf("%v does not list %s:\n%s", args, noun, out.String())
			}
		}
	}
	// Without a command: the same help on stderr, and exit status 2.
	var out, errb bytes.Buffer
	if rc := run(nil, &out, &errb); rc != 2 || out.Len() != 0 || !strings.Contains(errb.String(), "\n  network ") {
		t.Errorf("no arguments: rc %d, stdout %q, stderr %q", rc, out.String(), errb.String())
	}
}

func TestEndpointCreateHelpExplainsEveryFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := run([]string{"endpoint", "create", "-h"}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d, stderr %q", rc, errb.String())
	}
	for _, want := range []string{
		"--network NAME", "--gateway NAME", "--name ID", "--ip IP", "--label LABEL", "--mac MAC",
		"16-1048575", "--server ADDR", "$IOTFABRIC_SERVER", "-o, --output FORMAT", "--timeout DURATION",
		"--tls-cert FILE", "--tls-key FILE", "--tls-ca FILE",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("endpoint create -h lacks %q:\n%s", want, out.String())
		}
	}
}

func TestEncapHelpUsesTheAPISpelling(t *testing.T) {
	for _, args := range [][]string{{"network", "create", "-h"}, {"gateway", "create", "-h"}} {
		var out, errb bytes.Buffer
		run(args, &out, &errb)
		if !strings.Contains(out.String(), "mplsoudp, mplsogre or vxlan") {
			t.Errorf("%v: --encap help does not list mplsoudp, mplsogre or vxlan:\n%s", args, out.String())
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := run([]string{"completion", "bash"}, &out, &errb); rc != 0 || errb.Len() != 0 {
		t.Fatalf("completion bash: rc %d, stderr %q", rc, errb.String())
	}
	script := out.String()
	if !strings.Contains(script, "__start_iotfabricctl") || !strings.Contains(script, "complete -o default -F __start_iotfabricctl iotfabricctl") {
		t.Fatalf("completion bash does not register a completion function:\n%.500s", script)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash not found: it is part of every Debian system")
	}
	f := filepath.Join(t.TempDir(), "iotfabricctl.bash")
	if err := os.WriteFile(f, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(bash, "-n", f).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, b)
	}
	for _, shell := range []string{"zsh", "fish", "powershell"} {
		out.Reset()
		if rc := run([]string{"completion", shell}, &out, &errb); rc != 0 || out.Len() == 0 {
			t.Errorf("completion %s: rc %d, %d bytes", shell, rc, out.Len())
		}
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// complete asks for completions as the shell scripts do, and returns the candidates.
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	var out, errb bytes.Buffer
	if rc := run(append([]string{cobra.ShellCompRequestCmd}, args...), &out, &errb); rc != 0 {
		t.Fatalf("%v: rc %d, stderr %q", args, rc, errb.String())
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if strings.HasPrefix(line, ":") { // the directive
			continue
		}
		name, _, _ := strings.Cut(line, "\t")
		got = append(got, name)
	}
	return got
}

func TestCompletion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{""}, []string{"network", "gateway", "endpoint", "ipam", "peer", "route", "user", "login", "renew", "config", "version", "completion", "help"}},
		{[]string{"netw"}, []string{"network"}},
		{[]string{"network", ""}, []string{"create", "update", "list", "show", "delete"}},
		{[]string{"-o", ""}, []string{"table", "json"}},
		{[]string{"network", "create", "n", "--encap", ""}, []string{"mplsoudp", "mplsogre", "vxlan"}},
		{[]string{"gateway", "create", "g", "--encap", "mplsogre,"}, []string{"mplsogre,mplsoudp", "mplsogre,vxlan"}},
	} {
		if got := complete(t, tc.args...); !sameSet(got, tc.want) {
			t.Errorf("complete %q: got %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestCompletionAsksTheController(t *testing.T) {
	srv := startController(t)
	for _, args := range [][]string{
		{"network", "create", "sensors", "--subnet", "10.1.0.0/24"},
		{"network", "create", "meters", "--subnet", "10.2.0.0/24"},
		{"gateway", "create", "gw1", "--address", "192.0.2.1"},
		{"endpoint", "create", "--network", "sensors", "--gateway", "gw1", "--name", "pod-a"},
	} {
		if _, errs, rc := ctl(t, srv, args...); rc != 0 {
			t.Fatalf("%v: rc %d %q", args, rc, errs)
		}
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"network", "show", ""}, []string{"meters", "sensors"}},
		{[]string{"network", "delete", "s"}, []string{"sensors"}},
		{[]string{"network", "show", "sensors", ""}, nil},
		{[]string{"ipam", "show", ""}, []string{"meters", "sensors"}},
		{[]string{"gateway", "show", ""}, []string{"gw1"}},
		{[]string{"endpoint", "delete", ""}, []string{"pod-a"}},
		{[]string{"endpoint", "list", "--gateway", ""}, []string{"gw1"}},
		{[]string{"endpoint", "create", "--network", "m"}, []string{"meters"}},
		{[]string{"route", "list", "--network", ""}, []string{"meters", "sensors"}},
	} {
		if got := complete(t, append([]string{"--server", srv}, tc.args...)...); !slices.Equal(got, tc.want) {
			t.Errorf("complete %q: got %q, want %q", tc.args, got, tc.want)
		}
	}
	// No controller: no candidates, and no error for the shell to show.
	if got := complete(t, "--server", "127.0.0.1:1", "network", "show", ""); len(got) != 0 {
		t.Errorf("unreachable controller: got %q", got)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		want  string
		usage string // the usage line that follows, or "" for a one-line error
	}{
		{[]string{"network", "create", "x", "--subnett", "10.0.0.0/24"}, "network create: unknown flag: --subnett", "iotfabricctl network create NAME --subnet CIDR"},
		{[]string{"network", "create", "x", "--subnet"}, "flag needs an argument: --subnet", "iotfabricctl network create NAME"},
		{[]string{"network", "create", "x", "--block-v4", "big", "--subnet", "10.0.0.0/24"}, `invalid argument "big" for "--block-v4"`, "iotfabricctl network create NAME"},
		{[]string{"network", "update", "x", "--block-v4", "26"}, "unknown flag: --block-v4", "iotfabricctl network update NAME"},
		{[]string{"network", "show"}, "network show takes exactly one name, got 0", "iotfabricctl network show NAME"},
		{[]string{"network", "delete", "a", "b"}, "network delete takes exactly one name, got 2", "iotfabricctl network delete NAME"},
		{[]string{"network", "list", "extra"}, `network list takes no arguments, got ["extra"]`, "iotfabricctl network list"},
		{[]string{"network"}, `missing subcommand after "network"`, "iotfabricctl network COMMAND"},
		{[]string{"endpoint", "create", "a", "b"}, "endpoint create takes at most one id, got 2", "iotfabricctl endpoint create --network"},
		{[]string{"--timeout", "soon", "network", "list"}, `invalid argument "soon" for "--timeout"`, "iotfabricctl network list"},
		{[]string{"network", "frob"}, `unknown network command "frob": use create, update, list, show or delete`, ""},
		{[]string{"netwrk", "list"}, `unknown command "netwrk" (did you mean network?)`, ""},
		{[]string{"--timeout", "0s", "network", "list"}, "timeout 0s: want a duration", ""},
		{[]string{"endpoint", "create", "--network", "n", "--gateway", "g", "--name", "e", "--label", "many"}, `label "many" is not a number`, ""},
		{[]string{"peer", "add", "10.0.0.2"}, "peer add needs --asn", ""},
		{[]string{"route", "list"}, "route list needs --network", ""},
		{[]string{"--tls-cert", "c.pem", "network", "list"}, "all three files", ""},
	} {
		var out, errb bytes.Buffer
		rc := run(append([]string{"--server", "127.0.0.1:1"}, tc.args...), &out, &errb)
		first, rest, _ := strings.Cut(errb.String(), "\n")
		ok := rc == 2 && out.Len() == 0 && strings.HasPrefix(first, "iotfabricctl: ") && strings.Contains(first, tc.want)
		if tc.usage == "" {
			ok = ok && rest == "" && strings.Contains(first, "--help")
		} else {
			ok = ok && strings.HasPrefix(rest, "Usage:\n  "+tc.usage)
		}
		if !ok {
			t.Errorf("%v: rc %d (want 2), stdout %q, stderr:\n%s\nwant %q then usage %q", tc.args, rc, out.String(), errb.String(), tc.want, tc.usage)
		}
	}
}

// TestCommandLines checks the spellings scripts use: aliases, global flags
// before or after the noun, one-dash long flags, flags before the name.
func TestCommandLines(t *testing.T) {
	srv := startController(t)
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"net", "create", "-subnet", "10.1.0.0/24", "-export-rt=target:64512:7", "legacy"}, "target:64512:7"},
		{[]string{"networks", "get", "legacy", "--output", "json"}, `"export_route_targets"`},
		{[]string{"gw", "create", "gw1", "--address=192.0.2.1", "--encap", "mplsogre,vxlan"}, "mplsogre,vxlan"},
		{[]string{"ep", "create", "pod-b", "--network", "legacy", "--gateway", "gw1"}, "pod-b"},
		{[]string{"endpoints", "list", "--gateway", "gw1"}, "pod-b"},
		{[]string{"network", "update", "legacy", "--encap", "vxlan"}, "vxlan"},
		{[]string{"network", "update", "legacy", "--export-rt", "target:64512:8", "--export-rt", "target:64512:9"}, "target:64512:8,target:64512:9"},
		{[]string{"endpoint", "update", "pod-b", "--mac", "02:00:00:00:00:01"}, "02:00:00:00:00:01"},
		{[]string{"endpoint", "delete", "pod-b"}, "endpoint pod-b deleted"},
		{[]string{"gateway", "delete", "gw1"}, "gateway gw1 deleted"},
		{[]string{"network", "delete", "legacy"}, "network legacy deleted"},
		{[]string{"-o", "json", "network", "list"}, "[]"},
	}
	for _, s := range steps {
		out, errs, rc := ctl(t, srv, s.args...)
		if rc != 0 || !strings.Contains(out, s.want) {
			t.Fatalf("%v: rc %d, stdout %q, stderr %q; want %q", s.args, rc, out, errs, s.want)
		}
	}
	// The network kept its subnet and import list through the updates of other lists.
	if _, errs, rc := ctl(t, srv, "network", "create", "n", "--subnet", "10.3.0.0/24", "--import-rt", "target:1:1"); rc != 0 {
		t.Fatalf("network create: rc %d, %s", rc, errs)
	}
	if _, errs, rc := ctl(t, srv, "network", "update", "n", "--encap", "mplsogre"); rc != 0 {
		t.Fatalf("network update: rc %d, %s", rc, errs)
	}
	out, _, _ := ctl(t, srv, "network", "show", "n", "-o", "json")
	var n map[string]any
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(toStrings(n["subnets"]), []string{"10.3.0.0/24"}) || !slices.Equal(toStrings(n["import_route_targets"]), []string{"target:1:1"}) ||
		!slices.Equal(toStrings(n["encapsulations"]), []string{"ENCAPSULATION_MPLS_O_GRE"}) {
		t.Errorf("after update --encap: %s", out)
	}
	// The server address from the environment; --server wins over it.
	t.Setenv(serverEnv, srv)
	var o, e bytes.Buffer
	if rc := run([]string{"network", "list"}, &o, &e); rc != 0 || !strings.Contains(o.String(), "10.3.0.0/24") {
		t.Errorf("$%s: rc %d %q %q", serverEnv, rc, o.String(), e.String())
	}
	if rc := run([]string{"--server", "127.0.0.1:1", "network", "list"}, &o, &e); rc != 1 {
		t.Errorf("--server does not override $%s: rc %d", serverEnv, rc)
	}
}

func toStrings(v any) []string {
	var out []string
	xs, _ := v.([]any)
	for _, x := range xs {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// TestServerErrors: what the controller refuses is exit status 1, one line.
func TestServerErrors(t *testing.T) {
	srv := startController(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"gateway", "create", "g", "--address", "not-an-ip"}, "invalid argument: "},
		{[]string{"endpoint", "delete", "nobody"}, "not found: "},
		// This controller runs no BGP speaker: no peer or route service.
		{[]string{"peer", "list"}, "unimplemented: "},
		{[]string{"route", "list", "--network", "x"}, "unimplemented: "},
	} {
		out, errs, rc := ctl(t, srv, tc.args...)
		if rc != 1 || out != "" || !strings.HasPrefix(errs, "iotfabricctl: "+tc.want) || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: rc %d (want 1), stdout %q, stderr %q (want one line with %q)", tc.args, rc, out, errs, tc.want)
		}
	}
}

// TestProcess runs the command as its own process: exit status and streams as a shell sees them.
func TestProcess(t *testing.T) {
	srv := startController(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args     []string
		rc       int
		out, err string
	}{
		{[]string{"network", "create", "sensors", "--subnet", "10.1.0.0/24"}, 0, "sensors", ""},
		{[]string{"network", "create", "sensors", "--subnet", "10.1.0.0/24"}, 1, "", "already exists"},
		{[]string{"network", "create", "x", "--bogus"}, 2, "", "unknown flag: --bogus"},
		{[]string{"network", "list", "-h"}, 0, "Usage:", ""},
	} {
		cmd := exec.Command(exe, tc.args...)
		cmd.Env = append(os.Environ(), "IOTFABRICCTL_TEST_MAIN=1", serverEnv+"="+srv)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		rc := cmd.ProcessState.ExitCode()
		if rc != tc.rc || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("%v: exit %d (want %d, %v), stdout %q, stderr %q", tc.args, rc, tc.rc, err, out.String(), errb.String())
		}
	}
}

// TestDocsListEveryCommand keeps docs/cli.md in step with the command tree:
// every noun has rows starting "| `iotfabricctl NOUN", which name each of its verbs.
func TestDocsListEveryCommand(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, noun := range tree(t).Commands() {
		if noun.Hidden || noun.Name() == "help" {
			continue
		}
		var rows []string
		for _, line := range strings.Split(string(doc), "\n") {
			if strings.HasPrefix(line, "| `iotfabricctl "+noun.Name()+" ") {
				cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
				rows = append(rows, cell)
			}
		}
		if len(rows) == 0 {
			t.Errorf("docs/cli.md has no row for %q", noun.Name())
			continue
		}
		words := strings.FieldsFunc(strings.Join(rows, " "), func(r rune) bool { return strings.ContainsRune(" `,|\\", r) })
		for _, verb := range noun.Commands() {
			if !verb.Hidden && verb.Name() != "help" && !slices.Contains(words, verb.Name()) {
				t.Errorf("docs/cli.md does not name %q", verb.CommandPath())
			}
		}
		for _, verb := range noun.Commands() {
			verb.LocalFlags().VisitAll(func(f *pflag.Flag) {
				if f.Name != "help" && verb.Parent().Name() != "completion" && !strings.Contains(strings.Join(rows, " "), "--"+f.Name) {
					t.Errorf("docs/cli.md does not mention %s --%s", verb.CommandPath(), f.Name)
				}
			})
		}
	}
}

func TestSingleDashLongFlags(t *testing.T) {
	root := newCLI(io.Discard).rootCommand()
	for _, tc := range []struct{ in, want string }{
		{"network create n -subnet 10.0.0.0/24 -encap=mplsogre", "network create n --subnet 10.0.0.0/24 --encap=mplsogre"},
		{"-server 127.0.0.1:1 -o json network list", "--server 127.0.0.1:1 -o json network list"},
		{"peer add 10.0.0.2 --asn 1 --password -port -port 1790", "peer add 10.0.0.2 --asn 1 --password -port --port 1790"},
		{"peer add 10.0.0.2 -password=-asn -asn 1", "peer add 10.0.0.2 --password=-asn --asn 1"},
		{"network show -o -help", "network show -o -help"},
		{"network show -help -- -subnet", "network show --help -- -subnet"},
		{"network create -x -subnetz 1", "network create -x -subnetz 1"},
	} {
		if got := strings.Join(singleDashLongFlags(root, strings.Fields(tc.in)), " "); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

// ipam show gives used/total exactly for IPv6 subnets of a /64 and a /48.
func TestIpamShowLargeIPv6(t *testing.T) {
	srv := startController(t)
	for _, args := range [][]string{
		{"network", "create", "v6", "--subnet", "fd00:1::/64", "--subnet", "fd00:2::/48", "--subnet", "10.9.0.0/24"},
		{"gateway", "create", "gw", "--address", "192.0.2.1"},
		{"endpoint", "create", "--network", "v6", "--gateway", "gw", "--name", "a"},
		{"endpoint", "create", "--network", "v6", "--gateway", "gw", "--name", "b"},
	} {
		if out, errs, rc := ctl(t, srv, args...); rc != 0 {
			t.Fatalf("%v: %d %s %s", args, rc, out, errs)
		}
	}
	out, errs, rc := ctl(t, srv, "ipam", "show", "v6")
	if rc != 0 {
		t.Fatalf("ipam show: %d %s", rc, errs)
	}
	used := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 4 && strings.Contains(f[0], "::/") {
			used[f[0]] = f[1] + " " + f[3]
		}
	}
	// Each endpoint gets one IPv6 address, from the first IPv6 subnet.
	for subnet, want := range map[string]string{
		"fd00:1::/64": "2/18446744073709551615 1/1152921504606846976",
		"fd00:2::/48": "0/1208925819614629174706175 0/75557863725914323419136",
	} {
		if used[subnet] != want {
			t.Errorf("%s: %q, want %q\n%s", subnet, used[subnet], want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}, {"-v"}} {
		var out, errb bytes.Buffer
		if rc := run(args, &out, &errb); rc != 0 || !strings.HasPrefix(out.String(), "iotfabricctl ") || !strings.Contains(out.String(), "(commit ") {
			t.Errorf("%v: rc %d, stdout %q, stderr %q", args, rc, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if rc := run([]string{"-o", "json", "version"}, &out, &errb); rc != 0 || !strings.Contains(out.String(), `"goVersion": "go`) {
		t.Errorf("-o json version: rc %d, stdout %q, stderr %q", rc, out.String(), errb.String())
	}
}
