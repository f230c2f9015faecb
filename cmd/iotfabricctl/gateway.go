package main

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) gatewayCommand() *cobra.Command {
	cmd := c.noun("gateway", "Gateways: the machines that run a vrouter agent",
		`A gateway is a machine running the vrouter agent. Tunnels from other gateways
and edge routers are addressed to its underlay IPv4 address, which is also the
administrator part of the route distinguisher of its endpoints' routes.`,
		[]string{"gateways", "gw"},
		c.gatewayCreate(),
		verb{use: "list", short: "List the gateways with their state and when their agent was last seen", paged: true, flags: c.listFlags,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) error {
				show, end := listed(c, gatewayHeader, gatewayRows)
				err := listPages(ctx, c, func(ctx context.Context, token string, size int32) ([]*v1.Gateway, string, error) {
					r, err := v1.NewGatewayServiceClient(conn).ListGateways(ctx, &v1.ListGatewaysRequest{PageToken: token, PageSize: size})
					return r.GetGateways(), r.GetNextPageToken(), err
				}, show)
				if err != nil {
					return err
				}
				return end()
			}},
		verb{use: "show NAME", aliases: []string{"get"}, short: "Show one gateway, with the architecture, agent version and kernel features its agent registered", args: oneName, names: gatewayNames,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
				g, err := v1.NewGatewayServiceClient(conn).GetGateway(ctx, &v1.NameRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return c.printGateway(g)
			}},
		verb{use: "delete NAME", short: "Delete a gateway (it must have no endpoints); its address blocks are released",
			args: oneName, names: gatewayNames,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
				if _, err := v1.NewGatewayServiceClient(conn).DeleteGateway(ctx, &v1.NameRequest{Name: args[0]}); err != nil {
					return err
				}
				return c.deleted("gateway", args[0])
			}},
		c.gatewayRevoke(),
		c.gatewayRevoked(),
	)
	cmd.AddCommand(c.tokenCommand(v1.TokenKind_TOKEN_KIND_GATEWAY))
	return cmd
}

func (c *cli) gatewayCreate() verb {
	var address, encap string
	var encaps []v1.Encapsulation
	return verb{
		use:     "create NAME --address IPv4",
		short:   "Register a gateway",
		example: `  iotfabricctl gateway create gw-1 --address 192.0.2.11 --encap mplsoudp,mplsogre`,
		args:    oneName,
		flags: func(cmd *cobra.Command) {
			cmd.Flags().StringVar(&address, "address", "", "underlay `IPv4` address of the gateway, the end of its tunnels (required)")
			cmd.Flags().StringVar(&encap, "encap", "", encapUsage("encapsulations the gateway supports"))
			cmd.RegisterFlagCompletionFunc("encap", completeEncaps)
		},
		check: func(*cobra.Command, []string) error {
			if address == "" {
				return usagef("gateway create needs --address (the gateway's underlay IPv4 address)")
			}
			var err error
			if encaps, err = model.ParseEncaps(encap); err != nil {
				return usagef("%v", err)
			}
			return nil
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
			g, err := v1.NewGatewayServiceClient(conn).CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{
				Name: args[0], UnderlayAddress: address, Encapsulations: encaps}})
			if err != nil {
				return err
			}
			return c.printGateways(g)
		},
	}
}
