package main

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) routeCommand() *cobra.Command {
	var req v1.ListRoutesRequest
	return c.noun("route", "VPN routes of a network: local endpoints and routes imported from peers",
		`The VPN routes of a network: the routes of its active endpoints, as the controller
advertises them (origin local), and the routes received from BGP peers with a
route target the network imports (origin imported).`,
		[]string{"routes"},
		verb{use: "list --network NETWORK", short: "List a network's VPN routes", paged: true,
			example: `  iotfabricctl route list --network sensors`,
			flags: func(cmd *cobra.Command) {
				cmd.Flags().StringVar(&req.Network, "network", "", "`NAME` of the network whose routes to list (required)")
				cmd.RegisterFlagCompletionFunc("network", c.completeValue(networkNames))
				c.listFlags(cmd)
			},
			check: func(*cobra.Command, []string) error {
				if req.Network == "" {
					return usagef("route list needs --network")
				}
				return nil
			},
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) error {
				show, end := listed(c, routeHeader, routeRows)
				err := listPages(ctx, c, func(ctx context.Context, token string, size int32) ([]*v1.Route, string, error) {
					r, err := v1.NewRouteServiceClient(conn).ListRoutes(ctx, &v1.ListRoutesRequest{Network: req.Network, PageToken: token, PageSize: size})
					return r.GetRoutes(), r.GetNextPageToken(), err
				}, show)
				if err != nil {
					return err
				}
				return end()
			}},
	)
}
