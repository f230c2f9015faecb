package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

const configLong = `The config file keeps the controllers this CLI talks to as named contexts,
each an address, the TLS files and a timeout, so that no flags are needed day
to day:

  current-context: prod
  contexts:
    - name: prod
      server: ctl.example:50051
      tls-cert: /path/admin.crt
      tls-key: /path/admin.key
      tls-ca: /path/ca.crt
      timeout: 30s        # optional

The file is $IOTFABRIC_CONFIG, else $XDG_CONFIG_HOME/iotfabric/config.yaml, else
~/.config/iotfabric/config.yaml; relative paths in it are relative to its
directory. A missing file is no error. Flags win over $IOTFABRIC_SERVER, which
wins over the context (--context NAME, else current-context), which wins over
the defaults. Any --tls-* flag replaces all three TLS files of the context.`

// configCommand is the "config" noun: it reads and writes the config file and
// never talks to the controller.
func (c *cli) configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:               "config",
		Short:             "Show and edit the contexts of the config file",
		Long:              configLong,
		Args:              cobra.ArbitraryArgs,
		RunE:              unknownCommand,
		ValidArgsFunction: cobra.NoFileCompletions,

		SuggestionsMinimumDistance: 2,
	}
	var set configContext
	for _, sub := range []*cobra.Command{
		{
			Use:   "view",
			Short: "Print the config file, the current context marked; key files appear by path only",
			Args:  noArgs,
			RunE:  c.configView,
		},
		{
			Use:     "get-contexts",
			Short:   "List the contexts, the current one marked with *",
			Args:    noArgs,
			RunE:    c.configGetContexts,
			Aliases: []string{"list"},
		},
		{
			Use:               "use-context NAME",
			Short:             "Make NAME the current context",
			Args:              oneName,
			RunE:              c.configUseContext,
			ValidArgsFunction: completeContexts,
		},
		{
			Use:   "set-context NAME [--server ADDR] [--tls-cert FILE --tls-key FILE] [--tls-ca FILE] [--timeout DURATION]",
			Short: "Create a context or update the fields given",
			Long: `set-context creates the context NAME, or updates the fields given of an
existing one. Relative file names are made absolute. The file is written with
mode 0600 (its directory 0700), through a temporary file renamed over it.`,
			Example: `  iotfabricctl config set-context prod --server ctl.example:50051 \
      --tls-cert admin.crt --tls-key admin.key --tls-ca ca.crt
  iotfabricctl config use-context prod`,
			Args:              oneName,
			ValidArgsFunction: completeContexts,
			RunE: func(cmd *cobra.Command, args []string) error {
				return c.configSetContext(cmd, args[0], set)
			},
		},
		{
			Use:               "delete-context NAME",
			Short:             "Remove the context NAME (if current, no context is current afterwards)",
			Args:              oneName,
			RunE:              c.configDeleteContext,
			ValidArgsFunction: completeContexts,
		},
	} {
		if sub.ValidArgsFunction == nil {
			sub.ValidArgsFunction = cobra.NoFileCompletions
		}
		cmd.AddCommand(sub)
	}
	// set-context has its own --server, --tls-* and --timeout: the context's fields, not this command's connection.
	sc, _, _ := cmd.Find([]string{"set-context"})
	f := sc.Flags()
	f.StringVar(&set.Server, "server", "", "the context's controller `ADDR` (host:port)")
	f.StringVar(&set.TLSCert, "tls-cert", "", "the context's client certificate `FILE` (PEM)")
	f.StringVar(&set.TLSKey, "tls-key", "", "the context's private key `FILE` (PEM) of --tls-cert")
	f.StringVar(&set.TLSCA, "tls-ca", "", "the context's CA certificate `FILE` (PEM)")
	f.DurationVar(&set.Timeout, "timeout", 0, "the context's `DURATION` to wait for the controller")
	sc.RegisterFlagCompletionFunc("server", cobra.NoFileCompletions)
	sc.RegisterFlagCompletionFunc("timeout", cobra.NoFileCompletions)
	return cmd
}

// completeContexts offers the names of the config file's contexts.
func completeContexts(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	path, err := configPath()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cf, err := loadConfig(path)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return cf.contextNames(), cobra.ShellCompDirectiveNoFileComp
}

// readConfig returns the config file's path and contents.
func readConfig() (string, *configFile, error) {
	path, err := configPath()
	if err != nil {
		return "", nil, err
	}
	cf, err := loadConfig(path)
	return path, cf, err
}

func (c *cli) configView(*cobra.Command, []string) error {
	path, cf, err := readConfig()
	if err != nil {
		return err
	}
	if c.format == "json" {
		b, err := json.MarshalIndent(struct {
			Path           string        `json:"path"`
			CurrentContext string        `json:"current-context,omitempty"`
			Contexts       []jsonContext `json:"contexts"`
		}{path, cf.CurrentContext, jsonContexts(cf.Contexts)}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(c.out, string(b))
		return err
	}
	var doc yaml.Node
	if err := doc.Encode(cf); err != nil {
		return err
	}
	markCurrent(&doc, cf.CurrentContext)
	b, err := yaml.Marshal(&doc)
	if err != nil {
		return err
	}
	note := ""
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		note = " (no such file: the defaults apply)"
	}
	_, err = fmt.Fprintf(c.out, "# %s%s\n%s", path, note, b)
	return err
}

// markCurrent adds the comment "current" to the name of the current context.
func markCurrent(doc *yaml.Node, current string) {
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value != "contexts" {
			continue
		}
		for _, x := range doc.Content[i+1].Content {
			for j := 0; j+1 < len(x.Content); j += 2 {
				if x.Content[j].Value == "name" && x.Content[j+1].Value == current {
					x.Content[j+1].LineComment = "current"
				}
			}
		}
	}
}

func (c *cli) configGetContexts(*cobra.Command, []string) error {
	_, cf, err := readConfig()
	if err != nil {
		return err
	}
	if c.format == "json" {
		b, err := json.MarshalIndent(jsonContexts(cf.Contexts), "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(c.out, string(b))
		return err
	}
	var rows [][]string
	for _, x := range cf.Contexts {
		mark, tls, timeout := "", "no", ""
		if x.Name == cf.CurrentContext {
			mark = "*"
		}
		if x.TLSCert != "" || x.TLSCA != "" {
			tls = "yes"
		}
		if x.Timeout > 0 {
			timeout = x.Timeout.String()
		}
		rows = append(rows, []string{mark, x.Name, x.Server, tls, timeout})
	}
	return c.table("CURRENT\tNAME\tSERVER\tTLS\tTIMEOUT", rows)
}

func (c *cli) configUseContext(_ *cobra.Command, args []string) error {
	path, cf, err := readConfig()
	if err != nil {
		return err
	}
	if _, err := cf.find(args[0]); err != nil {
		return err
	}
	cf.CurrentContext = args[0]
	if err := saveConfig(path, cf); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.out, "current context is %s\n", args[0])
	return err
}

func (c *cli) configSetContext(cmd *cobra.Command, name string, set configContext) error {
	path, cf, err := readConfig()
	if err != nil {
		return err
	}
	x, err := cf.find(name)
	created := err != nil
	if created {
		cf.Contexts = append(cf.Contexts, configContext{Name: name})
		x = &cf.Contexts[len(cf.Contexts)-1]
	}
	f := cmd.Flags()
	for _, p := range []struct {
		flag      string
		from, dst *string
		file      bool
	}{
		{"server", &set.Server, &x.Server, false},
		{"tls-cert", &set.TLSCert, &x.TLSCert, true},
		{"tls-key", &set.TLSKey, &x.TLSKey, true},
		{"tls-ca", &set.TLSCA, &x.TLSCA, true},
	} {
		if !f.Changed(p.flag) {
			continue
		}
		v := *p.from
		if p.file && v != "" {
			if v, err = filepath.Abs(v); err != nil {
				return err
			}
		}
		*p.dst = v
	}
	if f.Changed("timeout") {
		if set.Timeout < 0 {
			return usagef("timeout %s: want a duration such as 10s, or 0 for the default", set.Timeout)
		}
		x.Timeout = set.Timeout
	}
	if (x.TLSCert == "") != (x.TLSKey == "") {
		return usagef("context %q would have a tls-cert without a tls-key or the reverse: give both", name)
	}
	if err := saveConfig(path, cf); err != nil {
		return err
	}
	word := "updated"
	if created {
		word = "created"
	}
	_, err = fmt.Fprintf(c.out, "context %s %s in %s\n", name, word, path)
	return err
}

func (c *cli) configDeleteContext(_ *cobra.Command, args []string) error {
	path, cf, err := readConfig()
	if err != nil {
		return err
	}
	if err := cf.deleteContext(args[0]); err != nil {
		return err
	}
	if err := saveConfig(path, cf); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.out, "context %s deleted\n", args[0])
	return err
}

// jsonContext is a context as -o json prints it: the timeout written as in the file.
type jsonContext struct {
	Name    string `json:"name"`
	Server  string `json:"server,omitempty"`
	TLSCert string `json:"tls-cert,omitempty"`
	TLSKey  string `json:"tls-key,omitempty"`
	TLSCA   string `json:"tls-ca,omitempty"`
	Timeout string `json:"timeout,omitempty"`
}

func jsonContexts(xs []configContext) []jsonContext {
	out := make([]jsonContext, len(xs))
	for i, x := range xs {
		out[i] = jsonContext{Name: x.Name, Server: x.Server, TLSCert: x.TLSCert, TLSKey: x.TLSKey, TLSCA: x.TLSCA}
		if x.Timeout > 0 {
			out[i].Timeout = x.Timeout.String()
		}
	}
	return out
}
