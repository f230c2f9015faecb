package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) networkCommand() *cobra.Command {
	cmd := nounCommand("network", "Virtual networks: subnets, route targets, encapsulations",
		`A virtual network is a private L3 network spanning gateways and data-centre VRFs.
Each gets an id and the automatic route target target:<asn>:<8000000+id>; its
subnets are cut into address blocks leased to gateways.`,
		"networks", "net")
	cmd.AddCommand(c.networkCreate(), c.networkUpdate(), c.networkList(), c.networkShow(), c.networkDelete())
	return cmd
}

// networkFlags are the flags network create and update share.
type networkFlags struct {
	subnets, importRTs, exportRTs []string
	encap                         string
}

func (f *networkFlags) register(cmd *cobra.Command, update bool) {
	fs := cmd.Flags()
	again := "; repeat for several"
	if update {
		again = "; repeat for several; the list given replaces the current one"
	}
	fs.StringArrayVar(&f.subnets, "subnet", nil, "IPv4 or IPv6 subnet of the network, in `CIDR` form"+again)
	fs.StringArrayVar(&f.importRTs, "import-rt", nil, "extra route target `RT` to import (target:<asn>:<number>)"+again)
	fs.StringArrayVar(&f.exportRTs, "export-rt", nil, "extra route target `RT` to export (target:<asn>:<number>)"+again)
	fs.StringVar(&f.encap, "encap", "", encapUsage("encapsulations of the network"))
	cmd.RegisterFlagCompletionFunc("encap", completeEncaps)
	for _, name := range []string{"subnet", "import-rt", "export-rt"} {
		cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
}

func (c *cli) networkCreate() *cobra.Command {
	var f networkFlags
	var blockV4, blockV6 uint32
	cmd := &cobra.Command{
		Use:   "create NAME --subnet CIDR [--subnet CIDR]...",
		Short: "Create a virtual network",
		Long: `Create a virtual network with one or more subnets. Optional route targets
meet data-centre VRFs; the automatic route target is always imported and exported.`,
		Example:           `  iotfabricctl network create sensors --subnet 10.10.0.0/24 --subnet fd00:10::/64 --export-rt target:64512:100`,
		Args:              oneName,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			encaps, err := model.ParseEncaps(f.encap)
			if err != nil {
				return usagef("%v", err)
			}
			if len(f.subnets) == 0 {
				return usagef("network create needs at least one --subnet")
			}
			n := &v1.VirtualNetwork{Name: args[0], Subnets: f.subnets,
				ImportRouteTargets: f.importRTs, ExportRouteTargets: f.exportRTs,
				Encapsulations: encaps, Ipv4BlockSize: blockV4, Ipv6BlockSize: blockV6}
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				n, err := v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: n})
				if err != nil {
					return err
				}
				return c.printNetworks(n)
			})
		},
	}
	f.register(cmd, false)
	cmd.Flags().Uint32Var(&blockV4, "block-v4", 0, fmt.Sprintf("prefix `LENGTH` of the IPv4 address blocks leased to gateways (0: /%d)", ipam.DefaultBlockV4))
	cmd.Flags().Uint32Var(&blockV6, "block-v6", 0, fmt.Sprintf("prefix `LENGTH` of the IPv6 address blocks leased to gateways (0: /%d)", ipam.DefaultBlockV6))
	for _, name := range []string{"block-v4", "block-v6"} {
		cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
	return cmd
}

func (c *cli) networkUpdate() *cobra.Command {
	var f networkFlags
	cmd := &cobra.Command{
		Use:   "update NAME [--subnet CIDR]... [--import-rt RT]... [--export-rt RT]... [--encap LIST]",
		Short: "Change a network's subnets, route targets or encapsulations",
		Long: `Change a virtual network. Each list given replaces the current one; lists not
given stay as they are. Subnets may be added, and removed when no endpoint uses them.`,
		Example:           `  iotfabricctl network update sensors --import-rt target:65000:5 --encap mplsogre`,
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(networkNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			encaps, err := model.ParseEncaps(f.encap)
			if err != nil {
				return usagef("%v", err)
			}
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := v1.NewNetworkServiceClient(conn)
				n, err := cl.GetNetwork(ctx, &v1.NameRequest{Name: args[0]})
				if err != nil {
					return err
				}
				fs := cmd.Flags()
				if fs.Changed("subnet") {
					n.Subnets = f.subnets
				}
				if fs.Changed("import-rt") {
					n.ImportRouteTargets = f.importRTs
				}
				if fs.Changed("export-rt") {
					n.ExportRouteTargets = f.exportRTs
				}
				if fs.Changed("encap") {
					n.Encapsulations = encaps
				}
				n, err = cl.UpdateNetwork(ctx, &v1.UpdateNetworkRequest{Network: n})
				if err != nil {
					return err
				}
				return c.printNetworks(n)
			})
		},
	}
	f.register(cmd, true)
	return cmd
}

func (c *cli) networkList() *cobra.Command {
	return &cobra.Command{
		Use:               "list",
		Short:             "List the virtual networks",
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := v1.NewNetworkServiceClient(conn).ListNetworks(ctx, &v1.ListNetworksRequest{})
				if err != nil {
					return err
				}
				return c.printNetworks(r.Networks...)
			})
		},
	}
}

func (c *cli) networkShow() *cobra.Command {
	return &cobra.Command{
		Use:               "show NAME",
		Aliases:           []string{"get"},
		Short:             "Show one virtual network",
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(networkNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				n, err := v1.NewNetworkServiceClient(conn).GetNetwork(ctx, &v1.NameRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return c.printNetworks(n)
			})
		},
	}
}

func (c *cli) networkDelete() *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a virtual network (it must have no endpoints)",
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(networkNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				if _, err := v1.NewNetworkServiceClient(conn).DeleteNetwork(ctx, &v1.NameRequest{Name: args[0]}); err != nil {
					return err
				}
				return c.deleted("network", args[0])
			})
		},
	}
}
