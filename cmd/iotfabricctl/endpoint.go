package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func (c *cli) endpointCommand() *cobra.Command {
	return c.noun("endpoint", "Endpoints: interfaces of pods or VMs in a network, on a gateway",
		`An endpoint is one interface of a pod or VM in a virtual network, on a gateway.
Its addresses come from the gateway's address blocks unless given. Once it has
an MPLS label (given here, or by the gateway's agent) it is active: advertised
to the BGP peers and to the other gateways of the network.`,
		[]string{"endpoints", "ep"},
		c.endpointCreate(),
		c.endpointUpdate(),
		c.endpointList(),
		verb{use: "show ID", aliases: []string{"get"}, short: "Show one endpoint", args: oneName, names: endpointIDs,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
				e, err := v1.NewEndpointServiceClient(conn).GetEndpoint(ctx, &v1.GetEndpointRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return c.printEndpoints(e)
			}},
		verb{use: "delete ID", short: "Delete an endpoint and release its addresses", args: oneName, names: endpointIDs,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
				if _, err := v1.NewEndpointServiceClient(conn).DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: args[0]}); err != nil {
					return err
				}
				return c.deleted("endpoint", args[0])
			}},
	)
}

// labelRange is the MPLS label range an endpoint may be given.
var labelRange = fmt.Sprintf("%d-%d", model.MinLabel, model.MaxLabel)

// parseLabel reads --label: empty means no label (0).
func parseLabel(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	l, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, usagef("label %q is not a number", s)
	}
	return uint32(l), nil
}

func (c *cli) endpointCreate() verb {
	var e v1.Endpoint
	var label string
	return verb{
		use:   "create --network NETWORK --gateway GATEWAY --name ID",
		short: "Create an endpoint and allocate its addresses",
		long: `Create an endpoint: one address per address family of the network is taken
from the gateway's address blocks, unless --ip gives them. The endpoint id may
also be given as the only argument instead of --name. Creating an endpoint that
already exists with the same network and gateway returns it unchanged.`,
		example: `  iotfabricctl endpoint create --network sensors --gateway gw-1 --name pod-a
  iotfabricctl endpoint create --network sensors --gateway gw-1 --name vm-historian --ip 10.10.0.200 --label 101`,
		args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return syntaxf("endpoint create takes at most one id, got %d", len(args))
			}
			return nil
		},
		flags: func(cmd *cobra.Command) {
			fs := cmd.Flags()
			fs.StringVar(&e.Network, "network", "", "`NAME` of the virtual network the endpoint joins (required)")
			fs.StringVar(&e.Gateway, "gateway", "", "`NAME` of the gateway the endpoint is on (required)")
			fs.StringVar(&e.Id, "name", "", "endpoint `ID`, unique: a pod's container id and interface, a VM name... (required)")
			fs.StringArrayVar(&e.Addresses, "ip", nil, "`IP` address to give the endpoint instead of allocating one (no prefix length); repeat for one per address family")
			fs.StringVar(&label, "label", "", "MPLS `LABEL` ("+labelRange+"); without it the gateway's agent gives one")
			fs.StringVar(&e.Mac, "mac", "", "`MAC` address of the interface, such as 02:00:00:00:00:01")
			cmd.RegisterFlagCompletionFunc("network", c.completeValue(networkNames))
			cmd.RegisterFlagCompletionFunc("gateway", c.completeValue(gatewayNames))
		},
		check: func(_ *cobra.Command, args []string) error {
			if e.Id == "" && len(args) == 1 {
				e.Id = args[0]
			}
			if e.Id == "" || e.Network == "" || e.Gateway == "" {
				return usagef("endpoint create needs --network, --gateway and --name")
			}
			var err error
			e.Label, err = parseLabel(label)
			return err
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) error {
			out, err := v1.NewEndpointServiceClient(conn).CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &e})
			if err != nil {
				return err
			}
			return c.printEndpoints(out)
		},
	}
}

func (c *cli) endpointUpdate() verb {
	var label, mac string
	var l uint32
	return verb{
		use:   "update ID [--label LABEL] [--mac MAC]",
		short: "Change an endpoint's MPLS label or MAC address",
		long: `Change an endpoint's MPLS label or MAC address; what is not given stays as it is.
Network, gateway and addresses are fixed: delete and create the endpoint to change them.`,
		example: `  iotfabricctl endpoint update vm-historian --label 200`,
		args:    oneName,
		names:   endpointIDs,
		flags: func(cmd *cobra.Command) {
			cmd.Flags().StringVar(&label, "label", "", "new MPLS `LABEL` ("+labelRange+"; empty or 0: none)")
			cmd.Flags().StringVar(&mac, "mac", "", "new `MAC` address of the interface (empty: none)")
		},
		check: func(*cobra.Command, []string) error {
			var err error
			l, err = parseLabel(label)
			return err
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, cmd *cobra.Command, args []string) error {
			cl := v1.NewEndpointServiceClient(conn)
			e, err := cl.GetEndpoint(ctx, &v1.GetEndpointRequest{Id: args[0]})
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("label") {
				e.Label = l
			}
			if cmd.Flags().Changed("mac") {
				e.Mac = mac
			}
			if e, err = cl.UpdateEndpoint(ctx, &v1.UpdateEndpointRequest{Endpoint: e}); err != nil {
				return err
			}
			return c.printEndpoints(e)
		},
	}
}

func (c *cli) endpointList() verb {
	var filter v1.ListEndpointsRequest
	return verb{
		use:   "list [--network NETWORK] [--gateway GATEWAY]",
		short: "List endpoints, all or those of a network or gateway",
		flags: func(cmd *cobra.Command) {
			cmd.Flags().StringVar(&filter.Network, "network", "", "only the endpoints of the network `NAME`")
			cmd.Flags().StringVar(&filter.Gateway, "gateway", "", "only the endpoints on the gateway `NAME`")
			cmd.RegisterFlagCompletionFunc("network", c.completeValue(networkNames))
			cmd.RegisterFlagCompletionFunc("gateway", c.completeValue(gatewayNames))
			c.listFlags(cmd)
		},
		paged: true,
		call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) error {
			show, end := listed(c, endpointHeader, endpointRows)
			err := listPages(ctx, c, func(ctx context.Context, token string, size int32) ([]*v1.Endpoint, string, error) {
				r, err := v1.NewEndpointServiceClient(conn).ListEndpoints(ctx, &v1.ListEndpointsRequest{
					Network: filter.Network, Gateway: filter.Gateway, PageToken: token, PageSize: size})
				return r.GetEndpoints(), r.GetNextPageToken(), err
			}, show)
			if err != nil {
				return err
			}
			return end()
		},
	}
}
