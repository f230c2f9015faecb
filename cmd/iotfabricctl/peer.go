package main

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) peerCommand() *cobra.Command {
	cmd := nounCommand("peer", "BGP neighbours of the controller (edge routers, route reflectors)",
		`BGP neighbours of the controller's iBGP speaker, which runs when the controller's
configuration sets bgp.router_id. Peers added here are kept in the store, so they
survive restarts and every controller sharing the store peers with them; peers
from the configuration file are listed with source "config".`,
		"peers")
	cmd.AddCommand(c.peerAdd(), c.peerList(), c.peerDelete())
	return cmd
}

func (c *cli) peerAdd() *cobra.Command {
	var asn, port uint32
	var password string
	cmd := &cobra.Command{
		Use:               "add ADDRESS --asn N",
		Short:             "Add (or replace) a BGP peer",
		Example:           `  iotfabricctl peer add 10.0.0.2 --asn 64512 --password s3cret`,
		Args:              oneName,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if asn == 0 {
				return usagef("peer add needs --asn")
			}
			p := &v1.Peer{Address: args[0], Asn: asn, Password: password, Port: port}
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				p, err := v1.NewPeerServiceClient(conn).AddPeer(ctx, &v1.AddPeerRequest{Peer: p})
				if err != nil {
					return err
				}
				return c.printPeers(p)
			})
		},
	}
	fs := cmd.Flags()
	fs.Uint32Var(&asn, "asn", 0, "AS number `N` of the peer (required; the controller's own for iBGP)")
	fs.StringVar(&password, "password", "", "TCP MD5 `PASSWORD` of the session (RFC 2385); never shown by list")
	fs.Uint32Var(&port, "port", 0, "TCP `PORT` of the peer (0: 179)")
	for _, f := range []string{"asn", "password", "port"} {
		cmd.RegisterFlagCompletionFunc(f, cobra.NoFileCompletions)
	}
	return cmd
}

func (c *cli) peerList() *cobra.Command {
	return &cobra.Command{
		Use:               "list",
		Short:             "List the BGP peers with session state and prefix counts",
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := v1.NewPeerServiceClient(conn).ListPeers(ctx, &v1.ListPeersRequest{})
				if err != nil {
					return err
				}
				return c.printPeers(r.Peers...)
			})
		},
	}
}

func (c *cli) peerDelete() *cobra.Command {
	return &cobra.Command{
		Use:               "delete ADDRESS",
		Short:             "Delete a BGP peer added through the API",
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(peerAddresses),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				if _, err := v1.NewPeerServiceClient(conn).DeletePeer(ctx, &v1.DeletePeerRequest{Address: args[0]}); err != nil {
					return err
				}
				return c.deleted("peer", args[0])
			})
		},
	}
}
