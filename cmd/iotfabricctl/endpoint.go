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
	cmd := nounCommand("endpoint", "Endpoints: interfaces of pods or VMs in a network, on a gateway",
		`An endpoint is one interface of a pod or VM in a virtual network, on a gateway.
Its addresses come from the gateway's address blocks unless given. Once it has
an MPLS label (given here, or by the gateway's agent) it is active: advertised
to the BGP peers and to the other gateways of the network.`,
		"endpoints", "ep")
	cmd.AddCommand(c.endpointCreate(), c.endpointUpdate(), c.endpointList(), c.endpointShow(), c.endpointDelete())
	return cmd
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

func (c *cli) endpointCreate() *cobra.Command {
	var network, gateway, name, label, mac string
	var ips []string
	cmd := &cobra.Command{
		Use:   "create --network NETWORK --gateway GATEWAY --name ID",
		Short: "Create an endpoint and allocate its addresses",
		Long: `Create an endpoint: one address per address family of the network is taken
from the gateway's address blocks, unless --ip gives them. The endpoint id may
also be given as the only argument instead of --name. Creating an endpoint that
already exists with the same network and gateway returns it unchanged.`,
		Example: `  iotfabricctl endpoint create --network sensors --gateway gw-1 --name pod-a
  iotfabricctl endpoint create --network sensors --gateway gw-1 --name vm-historian --ip 10.10.0.200 --label 101`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return syntaxf("endpoint create takes at most one id, got %d", len(args))
			}
			return nil
		},
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" && len(args) == 1 {
				name = args[0]
			}
			if name == "" || network == "" || gateway == "" {
				return usagef("endpoint create needs --network, --gateway and --name")
			}
			l, err := parseLabel(label)
			if err != nil {
				return err
			}
			e := &v1.Endpoint{Id: name, Network: network, Gateway: gateway, Addresses: ips, Label: l, Mac: mac}
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				e, err := v1.NewEndpointServiceClient(conn).CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: e})
				if err != nil {
					return err
				}
				return c.printEndpoints(e)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&network, "network", "", "`NAME` of the virtual network the endpoint joins (required)")
	fs.StringVar(&gateway, "gateway", "", "`NAME` of the gateway the endpoint is on (required)")
	fs.StringVar(&name, "name", "", "endpoint `ID`, unique: a pod's container id and interface, a VM name... (required)")
	fs.StringArrayVar(&ips, "ip", nil, "`IP` address to give the endpoint instead of allocating one (no prefix length); repeat for one per address family")
	fs.StringVar(&label, "label", "", "MPLS `LABEL` ("+labelRange+"); without it the gateway's agent gives one")
	fs.StringVar(&mac, "mac", "", "`MAC` address of the interface, such as 02:00:00:00:00:01")
	cmd.RegisterFlagCompletionFunc("network", c.completeValue(networkNames))
	cmd.RegisterFlagCompletionFunc("gateway", c.completeValue(gatewayNames))
	for _, f := range []string{"name", "ip", "label", "mac"} {
		cmd.RegisterFlagCompletionFunc(f, cobra.NoFileCompletions)
	}
	return cmd
}

func (c *cli) endpointUpdate() *cobra.Command {
	var label, mac string
	cmd := &cobra.Command{
		Use:   "update ID [--label LABEL] [--mac MAC]",
		Short: "Change an endpoint's MPLS label or MAC address",
		Long: `Change an endpoint's MPLS label or MAC address; what is not given stays as it is.
Network, gateway and addresses are fixed: delete and create the endpoint to change them.`,
		Example:           `  iotfabricctl endpoint update vm-historian --label 200`,
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(endpointIDs),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := parseLabel(label)
			if err != nil {
				return err
			}
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
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
				e, err = cl.UpdateEndpoint(ctx, &v1.UpdateEndpointRequest{Endpoint: e})
				if err != nil {
					return err
				}
				return c.printEndpoints(e)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&label, "label", "", "new MPLS `LABEL` ("+labelRange+"; empty or 0: none)")
	fs.StringVar(&mac, "mac", "", "new `MAC` address of the interface (empty: none)")
	for _, f := range []string{"label", "mac"} {
		cmd.RegisterFlagCompletionFunc(f, cobra.NoFileCompletions)
	}
	return cmd
}

func (c *cli) endpointList() *cobra.Command {
	var network, gateway string
	cmd := &cobra.Command{
		Use:               "list [--network NETWORK] [--gateway GATEWAY]",
		Short:             "List endpoints, all or those of a network or gateway",
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := v1.NewEndpointServiceClient(conn).ListEndpoints(ctx, &v1.ListEndpointsRequest{Network: network, Gateway: gateway})
				if err != nil {
					return err
				}
				return c.printEndpoints(r.Endpoints...)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&network, "network", "", "only the endpoints of the network `NAME`")
	fs.StringVar(&gateway, "gateway", "", "only the endpoints on the gateway `NAME`")
	cmd.RegisterFlagCompletionFunc("network", c.completeValue(networkNames))
	cmd.RegisterFlagCompletionFunc("gateway", c.completeValue(gatewayNames))
	return cmd
}

func (c *cli) endpointShow() *cobra.Command {
	return &cobra.Command{
		Use:               "show ID",
		Aliases:           []string{"get"},
		Short:             "Show one endpoint",
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(endpointIDs),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				e, err := v1.NewEndpointServiceClient(conn).GetEndpoint(ctx, &v1.GetEndpointRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return c.printEndpoints(e)
			})
		},
	}
}

func (c *cli) endpointDelete() *cobra.Command {
	return &cobra.Command{
		Use:               "delete ID",
		Short:             "Delete an endpoint and release its addresses",
		Args:              oneName,
		ValidArgsFunction: c.completeFirstArg(endpointIDs),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				if _, err := v1.NewEndpointServiceClient(conn).DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: args[0]}); err != nil {
					return err
				}
				return c.deleted("endpoint", args[0])
			})
		},
	}
}
