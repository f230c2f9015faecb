package main

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) peerCommand() *cobra.Command {
	return c.noun("peer", "BGP neighbours of the controller (edge routers, route reflectors)",
		`BGP neighbours of the controller's iBGP speaker, which runs when the controller's
configuration sets bgp.router_id. Peers added here are kept in the store, so they
survive restarts and every controller sharing the store peers with them; peers
from the configuration file are listed with source "config".`,
		[]string{"peers"},
		c.peerAdd(),
		verb{use: "list", short: "List the BGP peers with session state and prefix counts", paged: true, flags: c.listFlags,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) error {
				show, end := listed(c, peerHeader, peerRows)
				err := listPages(ctx, c, func(ctx context.Context, token string, size int32) ([]*v1.PeerStatus, string, error) {
					r, err := v1.NewPeerServiceClient(conn).ListPeers(ctx, &v1.ListPeersRequest{PageToken: token, PageSize: size})
					return r.GetPeers(), r.GetNextPageToken(), err
				}, show)
				if err != nil {
					return err
				}
				return end()
			}},
		verb{use: "delete ADDRESS", short: "Delete a BGP peer added through the API", args: oneName, names: peerAddresses,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
				if _, err := v1.NewPeerServiceClient(conn).DeletePeer(ctx, &v1.DeletePeerRequest{Address: args[0]}); err != nil {
					return err
				}
				return c.deleted("peer", args[0])
			}},
	)
}

func (c *cli) peerAdd() verb {
	var p v1.Peer
	return verb{
		use:     "add ADDRESS --asn N",
		short:   "Add (or replace) a BGP peer",
		example: `  iotfabricctl peer add 10.0.0.2 --asn 64512 --password s3cret`,
		args:    oneName,
		flags: func(cmd *cobra.Command) {
			fs := cmd.Flags()
			fs.Uint32Var(&p.Asn, "asn", 0, "AS number `N` of the peer (required; the controller's own for iBGP)")
			fs.StringVar(&p.Password, "password", "", "TCP MD5 `PASSWORD` of the session (RFC 2385); never shown by list")
			fs.Uint32Var(&p.Port, "port", 0, "TCP `PORT` of the peer (0: 179)")
			fs.Uint32Var(&p.MaxPrefixes, "max-prefixes", 0, "most routes `N` the peer may send per address family; more shut the session down until the peer is added again (0: the controller's bgp.max_prefixes)")
		},
		check: func(_ *cobra.Command, args []string) error {
			if p.Asn == 0 {
				return usagef("peer add needs --asn")
			}
			p.Address = args[0]
			return nil
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) error {
			st, err := v1.NewPeerServiceClient(conn).AddPeer(ctx, &v1.AddPeerRequest{Peer: &p})
			if err != nil {
				return err
			}
			return c.printPeers(st)
		},
	}
}
