package main

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) ipamCommand() *cobra.Command {
	cmd := nounCommand("ipam", "Address management: a network's subnets and the blocks leased to gateways",
		`A network's subnets are cut into address blocks (/28 and /124 unless the network
says otherwise) leased to gateways; a gateway's endpoints take their addresses
from its own blocks.`)
	cmd.AddCommand(&cobra.Command{
		Use:               "show NETWORK",
		Short:             "Show a network's address usage and the blocks leased to each gateway",
		Example:           `  iotfabricctl ipam show sensors`,
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(networkNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				st, err := v1.NewIpamServiceClient(conn).GetIpam(ctx, &v1.NameRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return c.printIpam(st)
			})
		},
	})
	return cmd
}
