package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/internal/buildinfo"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
)

// defaultServer is the controller address when neither --server nor $IOTFABRIC_SERVER is set.
const defaultServer = "127.0.0.1:50051"

// serverEnv names the environment variable that sets the default of --server.
const serverEnv = "IOTFABRIC_SERVER"

// defaultTimeout is --timeout when neither the flag nor the context sets it.
const defaultTimeout = 30 * time.Second

// cli holds the global flags and the connection shared by every command.
type cli struct {
	out        io.Writer
	format     string
	server     string
	timeout    time.Duration
	tls        tlsconfig.Files
	tlsContext string         // the config context the TLS files come from, once settled
	context    string         // --context
	flags      *pflag.FlagSet // the global flags, to tell which were given
	settled    bool           // server, timeout and tls hold the resolved settings
	conn       *grpc.ClientConn
	limit      int // --limit of list commands
}

func newCLI(out io.Writer) *cli {
	return &cli{out: out}
}

func (c *cli) close() {
	if c.conn != nil {
		c.conn.Close()
	}
}

const rootLong = `iotfabricctl drives an iotfabric controller through its gRPC API: virtual
networks, gateways, endpoints, address management (IPAM), BGP peers and VPN routes.

Route targets are written target:<asn>:<number> (with a 4-byte AS number, the
number is 0-65535). Encapsulations are mplsoudp, mplsogre and vxlan, given as a
comma-separated list in order of preference.

The controller, the TLS files and the timeout come from the flags, else (the
address) $IOTFABRIC_SERVER, else the current context of the config file
($IOTFABRIC_CONFIG, else $XDG_CONFIG_HOME/iotfabric/config.yaml, else
~/.config/iotfabric/config.yaml; see "iotfabricctl config"), else the
defaults: 127.0.0.1:50051, no TLS, 30s.

Exit status: 0 on success, 1 when the controller refused the request or could
not be reached, 2 when the command line is wrong.`

// rootCommand builds the whole command tree.
func (c *cli) rootCommand() *cobra.Command {
	cobra.EnableCommandSorting = false // verbs in the order create, update, list, show, delete
	root := &cobra.Command{
		Use:   "iotfabricctl",
		Short: "Operator CLI of the iotfabric controller",
		Long:  rootLong,
		Example: `  iotfabricctl network create sensors --subnet 10.10.0.0/24 --export-rt target:64512:100
  iotfabricctl --server ctl.example:50051 -o json endpoint list`,
		Args:              cobra.ArbitraryArgs,
		RunE:              unknownCommand,
		PersistentPreRunE: c.checkGlobalFlags,
		SilenceErrors:     true,
		SilenceUsage:      true,
		ValidArgsFunction: cobra.NoFileCompletions,

		SuggestionsMinimumDistance: 2,
	}
	root.Version = buildinfo.Get("iotfabricctl").Version
	root.SetVersionTemplate(buildinfo.Get("iotfabricctl").String() + "\n")
	root.Flags().BoolP("version", "v", false, "print the version, commit, build date, Go version and platform (as the version command)")
	root.SetFlagErrorFunc(flagError)
	root.SetUsageTemplate(usageTemplate(root.UsageTemplate()))

	server := os.Getenv(serverEnv)
	if server == "" {
		server = defaultServer
	}
	pf := root.PersistentFlags()
	pf.StringVar(&c.server, "server", server, "controller gRPC API `ADDR` (host:port); $"+serverEnv+" sets the default, else the config context's server")
	pf.StringVarP(&c.format, "output", "o", "table", "output `FORMAT`: table or json")
	pf.DurationVar(&c.timeout, "timeout", defaultTimeout, "give up on the controller after this `DURATION` (default: the config context's timeout, else 30s)")
	pf.StringVar(&c.tls.Cert, "tls-cert", "", "client certificate `FILE` (PEM) for a controller with mutual TLS; any --tls-* flag replaces the config context's three files")
	pf.StringVar(&c.tls.Key, "tls-key", "", "private key `FILE` (PEM) of --tls-cert")
	pf.StringVar(&c.tls.CA, "tls-ca", "", "CA certificate `FILE` (PEM) that signed the controller's certificate")
	pf.StringVar(&c.context, "context", "", "use the config file's context `NAME` rather than its current context")
	c.flags = pf
	root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	root.RegisterFlagCompletionFunc("server", cobra.NoFileCompletions)
	root.RegisterFlagCompletionFunc("timeout", cobra.NoFileCompletions)
	root.RegisterFlagCompletionFunc("context", completeContexts)

	root.AddGroup(
		&cobra.Group{ID: "resources", Title: "Resources:"},
		&cobra.Group{ID: "bgp", Title: "BGP:"},
		&cobra.Group{ID: "access", Title: "Access:"},
		&cobra.Group{ID: "cli", Title: "This CLI:"},
	)
	for _, n := range []struct {
		group string
		cmd   *cobra.Command
	}{
		{"resources", c.networkCommand()},
		{"resources", c.gatewayCommand()},
		{"resources", c.endpointCommand()},
		{"resources", c.ipamCommand()},
		{"bgp", c.peerCommand()},
		{"bgp", c.routeCommand()},
		{"access", c.userCommand()},
		{"access", c.loginCommand()},
		{"access", c.renewCommand()},
		{"cli", c.configCommand()},
		{"cli", c.versionCommand()},
	} {
		n.cmd.GroupID = n.group
		root.AddCommand(n.cmd)
	}
	return root
}

// usageTemplate shows "iotfabricctl network COMMAND" rather than two usage
// lines for a command that only groups others.
func usageTemplate(def string) string {
	const was = `Usage:{{if .Runnable}}
  {{.UseLine}}{{end}}{{if .HasAvailableSubCommands}}
  {{.CommandPath}} [command]{{end}}`
	const now = `Usage:{{if .HasAvailableSubCommands}}
  {{.CommandPath}} COMMAND [flags]{{else}}
  {{.UseLine}}{{end}}`
	return strings.Replace(strings.Replace(def, was, now, 1), "[command] --help", "COMMAND --help", 1)
}

func (c *cli) checkGlobalFlags(*cobra.Command, []string) error {
	if c.format != "table" && c.format != "json" {
		return usagef("output format %q: use table or json", c.format)
	}
	if c.timeout <= 0 {
		return usagef("timeout %s: want a duration such as 10s", c.timeout)
	}
	return nil
}

// flagError turns pflag's errors (unknown flag, missing or malformed value) into usage errors.
func flagError(cmd *cobra.Command, err error) error {
	return syntaxf("%s: %v", commandName(cmd), err)
}

// commandName is the command path without the program name: "network create".
func commandName(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return cmd.Name()
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// unknownCommand runs when no subcommand matched: the root or a noun was
// given nothing, or something it does not know.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		if !cmd.HasParent() {
			return &usageError{showUsage: true}
		}
		return syntaxf("missing subcommand after %q", cmd.Name())
	}
	hint := ""
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		hint = fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	if !cmd.HasParent() {
		return usagef("unknown command %q%s", args[0], hint)
	}
	var verbs []string
	for _, sub := range cmd.Commands() {
		if sub.IsAvailableCommand() {
			verbs = append(verbs, sub.Name())
		}
	}
	return usagef("unknown %s command %q%s: use %s", cmd.Name(), args[0], hint, orList(verbs))
}

// orList writes "a, b or c".
func orList(xs []string) string {
	if len(xs) < 2 {
		return strings.Join(xs, "")
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// verb is one row of a noun's command table.
type verb struct {
	use, short, long, example string
	aliases                   []string
	args                      cobra.PositionalArgs // nil: no arguments
	names                     lister               // completes the first argument from the controller
	flags                     func(*cobra.Command) // registers the verb's flags and their completions
	// check validates the command line before anything is sent.
	check func(cmd *cobra.Command, args []string) error
	// paged: call pages through a listing, each page within --timeout (not the whole listing).
	paged bool
	// call does the work with the controller.
	call func(ctx context.Context, conn *grpc.ClientConn, cmd *cobra.Command, args []string) error
}

// noun builds a noun and its verbs. Run alone or with an unknown verb, the noun says so.
func (c *cli) noun(use, short, long string, aliases []string, verbs ...verb) *cobra.Command {
	cmd := &cobra.Command{
		Use:               use,
		Aliases:           aliases,
		Short:             short,
		Long:              long,
		Args:              cobra.ArbitraryArgs,
		RunE:              unknownCommand,
		ValidArgsFunction: cobra.NoFileCompletions,

		SuggestionsMinimumDistance: 2,
	}
	for _, v := range verbs {
		cmd.AddCommand(c.verbCommand(v))
	}
	return cmd
}

func (c *cli) verbCommand(v verb) *cobra.Command {
	cmd := &cobra.Command{
		Use:               v.use,
		Aliases:           v.aliases,
		Short:             v.short,
		Long:              v.long,
		Example:           v.example,
		Args:              v.args,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if v.check != nil {
				if err := v.check(cmd, args); err != nil {
					return err
				}
			}
			return c.call(cmd, v.paged, func(ctx context.Context, conn *grpc.ClientConn) error {
				return v.call(ctx, conn, cmd, args)
			})
		},
	}
	if cmd.Args == nil {
		cmd.Args = noArgs
	}
	if v.names != nil {
		cmd.ValidArgsFunction = c.completeFirstArg(v.names)
	}
	if v.flags != nil {
		v.flags(cmd)
	}
	// A flag value is never a file name.
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if _, ok := cmd.GetFlagCompletionFunc(f.Name); !ok {
			cmd.RegisterFlagCompletionFunc(f.Name, cobra.NoFileCompletions)
		}
	})
	return cmd
}

// oneName accepts exactly one positional argument (a name, id or address).
func oneName(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return syntaxf("%s takes exactly one name, got %d", commandName(cmd), len(args))
	}
	return nil
}

// noArgs accepts no positional argument.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 0 {
		return syntaxf("%s takes no arguments, got %q", commandName(cmd), args)
	}
	return nil
}
