package main

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// completionTimeout bounds the controller look-up behind a <TAB>.
const completionTimeout = 3 * time.Second

// lister fetches the names a completion offers.
type lister func(ctx context.Context, conn *grpc.ClientConn) ([]string, error)

// completeFirstArg offers names from the controller for the first positional argument.
func (c *cli) completeFirstArg(list lister) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return c.completeValue(list)(cmd, args, toComplete)
	}
}

// completeValue offers names from the controller for a flag's value. With the
// controller out of reach it offers nothing rather than failing.
func (c *cli) completeValue(list lister) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		conn, err := c.connect()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), min(c.timeout, completionTimeout))
		defer cancel()
		names, err := list(ctx, conn)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) {
				out = append(out, n)
			}
		}
		sort.Strings(out)
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func networkNames(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	r, err := v1.NewNetworkServiceClient(conn).ListNetworks(ctx, &v1.ListNetworksRequest{})
	var out []string
	for _, n := range r.GetNetworks() {
		out = append(out, n.Name)
	}
	return out, err
}

func gatewayNames(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	r, err := v1.NewGatewayServiceClient(conn).ListGateways(ctx, &v1.ListGatewaysRequest{})
	var out []string
	for _, g := range r.GetGateways() {
		out = append(out, g.Name)
	}
	return out, err
}

func endpointIDs(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	r, err := v1.NewEndpointServiceClient(conn).ListEndpoints(ctx, &v1.ListEndpointsRequest{})
	var out []string
	for _, e := range r.GetEndpoints() {
		out = append(out, e.Id)
	}
	return out, err
}

func peerAddresses(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	r, err := v1.NewPeerServiceClient(conn).ListPeers(ctx, &v1.ListPeersRequest{})
	var out []string
	for _, p := range r.GetPeers() {
		out = append(out, p.GetPeer().GetAddress())
	}
	return out, err
}

// encapNames lists the encapsulation names users write, in the API's order.
func encapNames() []string {
	var vals []int
	for v := range v1.Encapsulation_name {
		if v != int32(v1.Encapsulation_ENCAPSULATION_UNSPECIFIED) {
			vals = append(vals, int(v))
		}
	}
	sort.Ints(vals)
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = model.EncapName(v1.Encapsulation(v))
	}
	return out
}

// completeEncaps completes a comma-separated list of encapsulations, one
// element at a time, leaving out those already in the list.
func completeEncaps(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	done, last := "", toComplete
	if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
		done, last = toComplete[:i+1], toComplete[i+1:]
	}
	used := map[string]bool{}
	for _, e := range strings.Split(done, ",") {
		used[e] = true
	}
	var out []cobra.Completion
	for _, n := range encapNames() {
		if !used[n] && strings.HasPrefix(n, last) {
			out = append(out, done+n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
}

// encapUsage is the help of every --encap flag.
func encapUsage(what string) string {
	return what + ": comma-separated `LIST` of " + orList(encapNames()) + ", preferred first (default " + model.FormatEncaps(model.DefaultEncapsulations) + ")"
}
