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
	return c.noun("network", "Virtual networks: subnets, route targets, encapsulations",
		`A virtual network is a private L3 network spanning gateways and data-centre VRFs.
Each gets an id and the automatic route target target:<asn>:<8000000+id>; its
subnets are cut into address blocks leased to gateways.`,
		[]string{"networks", "net"},
		c.networkCreate(),
		c.networkUpdate(),
		verb{use: "list", short: "List the virtual networks", paged: true, flags: c.listFlags,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) error {
				show, end := listed(c, networkHeader, networkRows)
				err := listPages(ctx, c, func(ctx context.Context, token string, size int32) ([]*v1.VirtualNetwork, string, error) {
					r, err := v1.NewNetworkServiceClient(conn).ListNetworks(ctx, &v1.ListNetworksRequest{PageToken: token, PageSize: size})
					return r.GetNetworks(), r.GetNextPageToken(), err
				}, show)
				if err != nil {
					return err
				}
				return end()
			}},
		verb{use: "show NAME", aliases: []string{"get"}, short: "Show one virtual network", args: oneName, names: networkNames,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
				n, err := v1.NewNetworkServiceClient(conn).GetNetwork(ctx, &v1.NameRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return c.printNetworks(n)
			}},
		verb{use: "delete NAME", short: "Delete a virtual network (it must have no endpoints)", args: oneName, names: networkNames,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
				if _, err := v1.NewNetworkServiceClient(conn).DeleteNetwork(ctx, &v1.NameRequest{Name: args[0]}); err != nil {
					return err
				}
				return c.deleted("network", args[0])
			}},
	)
}

// networkFlags are the flags network create and update share.
type networkFlags struct {
	subnets, importRTs, exportRTs []string
	encap                         string
	encaps                        []v1.Encapsulation // --encap, parsed
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
}

func (f *networkFlags) parseEncaps() error {
	var err error
	if f.encaps, err = model.ParseEncaps(f.encap); err != nil {
		return usagef("%v", err)
	}
	return nil
}

func (c *cli) networkCreate() verb {
	var f networkFlags
	var blockV4, blockV6 uint32
	return verb{
		use:   "create NAME --subnet CIDR [--subnet CIDR]...",
		short: "Create a virtual network",
		long: `Create a virtual network with one or more subnets. Optional route targets
meet data-centre VRFs; the automatic route target is always imported and exported.`,
		example: `  iotfabricctl network create sensors --subnet 10.10.0.0/24 --subnet fd00:10::/64 --export-rt target:64512:100`,
		args:    oneName,
		flags: func(cmd *cobra.Command) {
			f.register(cmd, false)
			cmd.Flags().Uint32Var(&blockV4, "block-v4", 0, fmt.Sprintf("prefix `LENGTH` of the IPv4 address blocks leased to gateways (0: /%d)", ipam.DefaultBlockV4))
			cmd.Flags().Uint32Var(&blockV6, "block-v6", 0, fmt.Sprintf("prefix `LENGTH` of the IPv6 address blocks leased to gateways (0: /%d)", ipam.DefaultBlockV6))
		},
		check: func(*cobra.Command, []string) error {
			if err := f.parseEncaps(); err != nil {
				return err
			}
			if len(f.subnets) == 0 {
				return usagef("network create needs at least one --subnet")
			}
			return nil
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
			n, err := v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{
				Name: args[0], Subnets: f.subnets, ImportRouteTargets: f.importRTs, ExportRouteTargets: f.exportRTs,
				Encapsulations: f.encaps, Ipv4BlockSize: blockV4, Ipv6BlockSize: blockV6}})
			if err != nil {
				return err
			}
			return c.printNetworks(n)
		},
	}
}

func (c *cli) networkUpdate() verb {
	var f networkFlags
	return verb{
		use:   "update NAME [--subnet CIDR]... [--import-rt RT]... [--export-rt RT]... [--encap LIST]",
		short: "Change a network's subnets, route targets or encapsulations",
		long: `Change a virtual network. Each list given replaces the current one; lists not
given stay as they are. Subnets may be added, and removed when no endpoint uses them.`,
		example: `  iotfabricctl network update sensors --import-rt target:65000:5 --encap mplsogre`,
		args:    oneName,
		names:   networkNames,
		flags:   func(cmd *cobra.Command) { f.register(cmd, true) },
		check:   func(*cobra.Command, []string) error { return f.parseEncaps() },
		call: func(ctx context.Context, conn *grpc.ClientConn, cmd *cobra.Command, args []string) error {
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
				n.Encapsulations = f.encaps
			}
			if n, err = cl.UpdateNetwork(ctx, &v1.UpdateNetworkRequest{Network: n}); err != nil {
				return err
			}
			return c.printNetworks(n)
		},
	}
}
