// Command iotfabricctl is the operator CLI of the iotfabric controller.
//
// One file per noun (network.go, gateway.go, endpoint.go, ipam.go, peer.go,
// route.go) holds that noun's command table: a verb per row, each with its
// help, flags, a check of the command line and the call to the controller.
// root.go holds the global flags, the root of the tree and the verb type,
// connection.go the gRPC connection and the error words, output.go the table
// and JSON printers, complete.go the shell completion of names and values.
//
// Exit status: 0 on success, 1 when the controller refused the request or could
// not be reached, 2 when the command line is wrong.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	c := newCLI(stdout)
	defer c.close()
	root := c.rootCommand()
	root.SetArgs(singleDashLongFlags(root, args))
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		ue.report(stderr, cmd)
		return 2
	}
	fmt.Fprintln(stderr, "iotfabricctl: "+c.describe(err))
	return 1
}

// usageError is a command line the CLI cannot act on (exit status 2).
type usageError struct {
	msg string
	// showUsage prints the command's usage after the message (wrong flags or
	// arguments); otherwise the message is one line that points to --help.
	showUsage bool
}

func (e *usageError) Error() string { return e.msg }

// usagef is a one-line usage error: a value or a required flag is wrong.
func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// syntaxf is a usage error about the shape of the command line: the usage follows the message.
func syntaxf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), showUsage: true}
}

func (e *usageError) report(w io.Writer, cmd *cobra.Command) {
	if e.msg == "" { // nothing but the usage was asked for
		fmt.Fprint(w, cmd.Long+"\n\n"+cmd.UsageString())
		return
	}
	if !e.showUsage {
		fmt.Fprintf(w, "iotfabricctl: %s (see %s --help)\n", e.msg, cmd.CommandPath())
		return
	}
	fmt.Fprintln(w, "iotfabricctl: "+e.msg)
	fmt.Fprint(w, cmd.UsageString())
}

// singleDashLongFlags rewrites -subnet as --subnet for every long flag the
// command tree knows, so command lines written for Go's flag package, which
// accepted both, keep working. Flag values and arguments after "--" are left alone.
func singleDashLongFlags(root *cobra.Command, args []string) []string {
	takesValue := map[string]bool{} // by "--name" and "-n"
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		add := func(f *pflag.Flag) {
			takesValue["--"+f.Name] = f.NoOptDefVal == ""
			if f.Shorthand != "" {
				takesValue["-"+f.Shorthand] = f.NoOptDefVal == ""
			}
		}
		c.InitDefaultHelpFlag() // as cobra would, so that -help is known
		c.Flags().VisitAll(add)
		c.PersistentFlags().VisitAll(add)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	out := make([]string, 0, len(args))
	value := false // args[i] is the value of the flag before it
	for i, a := range args {
		if value || a == "--" {
			if !value {
				return append(out, args[i:]...)
			}
			value = false
			out = append(out, a)
			continue
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a, "=")
			if _, ok := takesValue["-"+name]; ok {
				a = "-" + a
			}
		}
		if strings.HasPrefix(a, "-") && !strings.Contains(a, "=") {
			value = takesValue[a]
		}
		out = append(out, a)
	}
	return out
}
