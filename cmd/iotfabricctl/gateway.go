package main

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) gatewayCommand() *cobra.Command {
	cmd := nounCommand("gateway", "Gateways: the machines that run a vrouter agent",
		`A gateway is a machine running the vrouter agent. Tunnels from other gateways
and edge routers are addressed to its underlay IPv4 address, which is also the
administrator part of the route distinguisher of its endpoints' routes.`,
		"gateways", "gw")
	cmd.AddCommand(c.gatewayCreate(), c.gatewayList(), c.gatewayShow(), c.gatewayDelete())
	return cmd
}

func (c *cli) gatewayCreate() *cobra.Command {
	var address, encap string
	cmd := &cobra.Command{
		Use:               "create NAME --address IPv4",
		Short:             "Register a gateway",
		Example:           `  iotfabricctl gateway create gw-1 --address 192.0.2.11 --encap mplsoudp,mplsogre`,
		Args:              oneName,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if address == "" {
				return usagef("gateway create needs --address (the gateway's underlay IPv4 address)")
			}
			encaps, err := model.ParseEncaps(encap)
			if err != nil {
				return usagef("%v", err)
			}
			g := &v1.Gateway{Name: args[0], UnderlayAddress: address, Encapsulations: encaps}
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				g, err := v1.NewGatewayServiceClient(conn).CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: g})
				if err != nil {
					return err
				}
				return c.printGateways(g)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&address, "address", "", "underlay `IPv4` address of the gateway, the end of its tunnels (required)")
	fs.StringVar(&encap, "encap", "", encapUsage("encapsulations the gateway supports"))
	cmd.RegisterFlagCompletionFunc("address", cobra.NoFileCompletions)
	cmd.RegisterFlagCompletionFunc("encap", completeEncaps)
	return cmd
}

func (c *cli) gatewayList() *cobra.Command {
	return &cobra.Command{
		Use:               "list",
		Short:             "List the gateways with their state and when their agent was last seen",
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := v1.NewGatewayServiceClient(conn).ListGateways(ctx, &v1.ListGatewaysRequest{})
				if err != nil {
					return err
				}
				return c.printGateways(r.Gateways...)
			})
		},
	}
}

func (c *cli) gatewayShow() *cobra.Command {
	return &cobra.Command{
		Use:               "show NAME",
		Aliases:           []string{"get"},
		Short:             "Show one gateway",
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(gatewayNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				g, err := v1.NewGatewayServiceClient(conn).GetGateway(ctx, &v1.NameRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return c.printGateways(g)
			})
		},
	}
}

func (c *cli) gatewayDelete() *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a gateway (it must have no endpoints); its address blocks are released",
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(gatewayNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				if _, err := v1.NewGatewayServiceClient(conn).DeleteGateway(ctx, &v1.NameRequest{Name: args[0]}); err != nil {
					return err
				}
				return c.deleted("gateway", args[0])
			})
		},
	}
}
