package main

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) routeCommand() *cobra.Command {
	cmd := nounCommand("route", "VPN routes of a network: local endpoints and routes imported from peers",
		`The VPN routes of a network: the routes of its active endpoints, as the controller
advertises them (origin local), and the routes received from BGP peers with a
route target the network imports (origin imported).`,
		"routes")
	var network string
	list := &cobra.Command{
		Use:               "list --network NETWORK",
		Short:             "List a network's VPN routes",
		Example:           `  iotfabricctl route list --network sensors`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if network == "" {
				return usagef("route list needs --network")
			}
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := v1.NewRouteServiceClient(conn).ListRoutes(ctx, &v1.ListRoutesRequest{Network: network})
				if err != nil {
					return err
				}
				return c.printRoutes(r.Routes)
			})
		},
	}
	list.Flags().StringVar(&network, "network", "", "`NAME` of the network whose routes to list (required)")
	list.RegisterFlagCompletionFunc("network", c.completeValue(networkNames))
	cmd.AddCommand(list)
	return cmd
}
