package main

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) ipamCommand() *cobra.Command {
	return c.noun("ipam", "Address management: a network's subnets and the blocks leased to gateways",
		`A network's subnets are cut into address blocks (/28 and /124 unless the network
says otherwise) leased to gateways; a gateway's endpoints take their addresses
from its own blocks.`,
		nil,
		verb{use: "show NETWORK", short: "Show a network's address usage and the blocks leased to each gateway",
			example: `  iotfabricctl ipam show sensors`, args: oneName, names: networkNames,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
				st, err := v1.NewIpamServiceClient(conn).GetIpam(ctx, &v1.NameRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return c.printIpam(st)
			}},
	)
}
