package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/iotfabric/iotfabric/internal/buildinfo"
)

// versionCommand prints this CLI's build (no controller is asked).
func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print this CLI's version, commit, build date, Go version and platform",
		Long: `Print this CLI's version, commit, build date, Go version and platform (the same
line as iotfabricctl --version; with -o json, a JSON object). The controller is not asked.`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(*cobra.Command, []string) error {
			i := buildinfo.Get("iotfabricctl")
			if c.format == "json" {
				b, err := json.MarshalIndent(i, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(c.out, "%s\n", b)
				return err
			}
			_, err := fmt.Fprintln(c.out, i)
			return err
		},
	}
}
