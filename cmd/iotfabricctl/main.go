// Command iotfabricctl is the operator CLI of the iotfabric controller.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

const usage = `iotfabricctl drives an iotfabric controller.

Usage: iotfabricctl [--server ADDR] [-o table|json] [--timeout D]
                    [--tls-cert FILE --tls-key FILE --tls-ca FILE] COMMAND ...

Commands:
  network create NAME --subnet CIDR [--subnet CIDR ...] [--import-rt RT ...] [--export-rt RT ...]
                      [--encap mplsoudp,mplsogre] [--block-v4 28] [--block-v6 124]
  network update NAME [--subnet CIDR ...] [--import-rt RT ...] [--export-rt RT ...] [--encap LIST]
                      (each list given replaces the current one)
  network list | show NAME | delete NAME
  gateway create NAME --address IPv4 [--encap mplsoudp,mplsogre]
  gateway list | show NAME | delete NAME
  endpoint create --network N --gateway G --name ID [--ip IP ...] [--label N] [--mac MAC]
  endpoint update ID [--label N] [--mac MAC]
  endpoint list [--network N] [--gateway G] | show ID | delete ID
  ipam show NETWORK
  peer add ADDRESS --asn N [--password P] [--port 179]
  peer list | delete ADDRESS
  route list --network N

Route targets are written target:<asn>:<number> (with a 4-byte AS number, the number is 0-65535).
The server defaults to $IOTFABRIC_SERVER, else 127.0.0.1:50051.
`

type cli struct {
	out     io.Writer
	format  string
	server  string
	timeout time.Duration
	tls     tlsconfig.Files
	conn    *grpc.ClientConn
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{out: stdout, format: "table", server: os.Getenv("IOTFABRIC_SERVER"), timeout: 30 * time.Second}
	if c.server == "" {
		c.server = "127.0.0.1:50051"
	}
	rest, err := c.globalFlags(args)
	if err == nil && len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if err == nil {
		err = c.dispatch(rest)
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "iotfabricctl: "+c.describe(err))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg + " (see iotfabricctl --help)" }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// globalFlags takes --server, -o/--output and --timeout from anywhere in args.
func (c *cli) globalFlags(args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			continue
		}
		switch name {
		case "h", "help":
			return nil, flag.ErrHelp
		case "server", "o", "output", "timeout", "tls-cert", "tls-key", "tls-ca":
		default:
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, usagef("flag %s needs a value", a)
			}
			i++
			val = args[i]
		}
		switch name {
		case "server":
			c.server = val
		case "tls-cert":
			c.tls.Cert = val
		case "tls-key":
			c.tls.Key = val
		case "tls-ca":
			c.tls.CA = val
		case "o", "output":
			if val != "table" && val != "json" {
				return nil, usagef("output format %q: use table or json", val)
			}
			c.format = val
		case "timeout":
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 {
				return nil, usagef("timeout %q: want a duration such as 10s", val)
			}
			c.timeout = d
		}
	}
	return rest, nil
}

func (c *cli) describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("cannot reach the controller at %s: %s (is it running? use --server or $IOTFABRIC_SERVER)", c.server, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Sprintf("no answer from the controller at %s within %s", c.server, c.timeout)
	}
	return fmt.Sprintf("%s: %s", codeWords(st.Code()), st.Message())
}

// codeWords turns a gRPC code name into words: FailedPrecondition -> "failed precondition".
func codeWords(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte(' ')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (c *cli) connect() (*grpc.ClientConn, error) {
	if c.conn == nil {
		creds := insecure.NewCredentials()
		if c.tls.Enabled() {
			tc, err := tlsconfig.Client(c.tls)
			if err != nil {
				return nil, usagef("%v", err)
			}
			creds = credentials.NewTLS(tc)
		}
		conn, err := grpc.NewClient(c.server, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("controller address %q: %w", c.server, err)
		}
		c.conn = conn
	}
	return c.conn, nil
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

// parse parses flags and positional arguments in any order.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (c *cli) dispatch(args []string) error {
	if len(args) < 2 {
		return usagef("missing subcommand after %q", args[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	conn, err := c.connect()
	if err != nil {
		return err
	}
	noun, verb, rest := args[0], args[1], args[2:]
	switch noun {
	case "network", "networks", "net":
		return c.network(ctx, v1.NewNetworkServiceClient(conn), verb, rest)
	case "gateway", "gateways", "gw":
		return c.gateway(ctx, v1.NewGatewayServiceClient(conn), verb, rest)
	case "endpoint", "endpoints", "ep":
		return c.endpoint(ctx, v1.NewEndpointServiceClient(conn), verb, rest)
	case "peer", "peers":
		return c.peer(ctx, v1.NewPeerServiceClient(conn), verb, rest)
	case "route", "routes":
		return c.route(ctx, v1.NewRouteServiceClient(conn), verb, rest)
	case "ipam":
		if verb != "show" || len(rest) != 1 {
			return usagef("usage: ipam show NETWORK")
		}
		st, err := v1.NewIpamServiceClient(conn).GetIpam(ctx, &v1.NameRequest{Name: rest[0]})
		if err != nil {
			return err
		}
		return c.printIpam(st)
	}
	return usagef("unknown command %q", noun)
}

func oneName(verb string, pos []string) (string, error) {
	if len(pos) != 1 {
		return "", usagef("%s takes exactly one name, got %d", verb, len(pos))
	}
	return pos[0], nil
}

func (c *cli) network(ctx context.Context, cl v1.NetworkServiceClient, verb string, args []string) error {
	fs := flag.NewFlagSet("network "+verb, flag.ContinueOnError)
	var subnets, imp, exp multi
	fs.Var(&subnets, "subnet", "")
	fs.Var(&imp, "import-rt", "")
	fs.Var(&exp, "export-rt", "")
	encap := fs.String("encap", "", "")
	b4 := fs.Uint("block-v4", 0, "")
	b6 := fs.Uint("block-v6", 0, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch verb {
	case "create", "update":
		name, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		encaps, err := model.ParseEncaps(*encap)
		if err != nil {
			return usagef("%v", err)
		}
		var n *v1.VirtualNetwork
		if verb == "create" {
			if len(subnets) == 0 {
				return usagef("network create needs at least one --subnet")
			}
			n, err = cl.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{
				Name: name, Subnets: subnets, ImportRouteTargets: imp, ExportRouteTargets: exp,
				Encapsulations: encaps, Ipv4BlockSize: uint32(*b4), Ipv6BlockSize: uint32(*b6)}})
		} else {
			cur, gerr := cl.GetNetwork(ctx, &v1.NameRequest{Name: name})
			if gerr != nil {
				return gerr
			}
			fs.Visit(func(f *flag.Flag) {
				switch f.Name {
				case "subnet":
					cur.Subnets = subnets
				case "import-rt":
					cur.ImportRouteTargets = imp
				case "export-rt":
					cur.ExportRouteTargets = exp
				case "encap":
					cur.Encapsulations = encaps
				}
			})
			n, err = cl.UpdateNetwork(ctx, &v1.UpdateNetworkRequest{Network: cur})
		}
		if err != nil {
			return err
		}
		return c.printNetworks(n)
	case "list":
		r, err := cl.ListNetworks(ctx, &v1.ListNetworksRequest{})
		if err != nil {
			return err
		}
		return c.printNetworks(r.Networks...)
	case "show", "get":
		name, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		n, err := cl.GetNetwork(ctx, &v1.NameRequest{Name: name})
		if err != nil {
			return err
		}
		return c.printNetworks(n)
	case "delete":
		name, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		if _, err := cl.DeleteNetwork(ctx, &v1.NameRequest{Name: name}); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "network %s deleted\n", name)
		return nil
	}
	return usagef("unknown network command %q: use create, update, list, show or delete", verb)
}

func (c *cli) gateway(ctx context.Context, cl v1.GatewayServiceClient, verb string, args []string) error {
	fs := flag.NewFlagSet("gateway "+verb, flag.ContinueOnError)
	addr := fs.String("address", "", "")
	encap := fs.String("encap", "", "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch verb {
	case "create":
		name, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		if *addr == "" {
			return usagef("gateway create needs --address (the gateway's underlay IPv4 address)")
		}
		encaps, err := model.ParseEncaps(*encap)
		if err != nil {
			return usagef("%v", err)
		}
		g, err := cl.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: name, UnderlayAddress: *addr, Encapsulations: encaps}})
		if err != nil {
			return err
		}
		return c.printGateways(g)
	case "list":
		r, err := cl.ListGateways(ctx, &v1.ListGatewaysRequest{})
		if err != nil {
			return err
		}
		return c.printGateways(r.Gateways...)
	case "show", "get":
		name, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		g, err := cl.GetGateway(ctx, &v1.NameRequest{Name: name})
		if err != nil {
			return err
		}
		return c.printGateways(g)
	case "delete":
		name, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		if _, err := cl.DeleteGateway(ctx, &v1.NameRequest{Name: name}); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "gateway %s deleted\n", name)
		return nil
	}
	return usagef("unknown gateway command %q: use create, list, show or delete", verb)
}

func (c *cli) endpoint(ctx context.Context, cl v1.EndpointServiceClient, verb string, args []string) error {
	fs := flag.NewFlagSet("endpoint "+verb, flag.ContinueOnError)
	network := fs.String("network", "", "")
	gateway := fs.String("gateway", "", "")
	name := fs.String("name", "", "")
	var ips multi
	fs.Var(&ips, "ip", "")
	label := fs.String("label", "", "")
	mac := fs.String("mac", "", "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	parseLabel := func() (uint32, error) {
		if *label == "" {
			return 0, nil
		}
		l, err := strconv.ParseUint(*label, 10, 32)
		if err != nil {
			return 0, usagef("label %q is not a number", *label)
		}
		return uint32(l), nil
	}
	switch verb {
	case "create":
		if *name == "" && len(pos) == 1 {
			*name = pos[0]
		}
		if *name == "" || *network == "" || *gateway == "" {
			return usagef("endpoint create needs --network, --gateway and --name")
		}
		l, err := parseLabel()
		if err != nil {
			return err
		}
		e, err := cl.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{
			Id: *name, Network: *network, Gateway: *gateway, Addresses: ips, Label: l, Mac: *mac}})
		if err != nil {
			return err
		}
		return c.printEndpoints(e)
	case "update":
		id, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		cur, err := cl.GetEndpoint(ctx, &v1.GetEndpointRequest{Id: id})
		if err != nil {
			return err
		}
		l, err := parseLabel()
		if err != nil {
			return err
		}
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "label":
				cur.Label = l
			case "mac":
				cur.Mac = *mac
			}
		})
		e, err := cl.UpdateEndpoint(ctx, &v1.UpdateEndpointRequest{Endpoint: cur})
		if err != nil {
			return err
		}
		return c.printEndpoints(e)
	case "list":
		r, err := cl.ListEndpoints(ctx, &v1.ListEndpointsRequest{Network: *network, Gateway: *gateway})
		if err != nil {
			return err
		}
		return c.printEndpoints(r.Endpoints...)
	case "show", "get":
		id, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		e, err := cl.GetEndpoint(ctx, &v1.GetEndpointRequest{Id: id})
		if err != nil {
			return err
		}
		return c.printEndpoints(e)
	case "delete":
		id, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		if _, err := cl.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: id}); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "endpoint %s deleted\n", id)
		return nil
	}
	return usagef("unknown endpoint command %q: use create, update, list, show or delete", verb)
}

func (c *cli) peer(ctx context.Context, cl v1.PeerServiceClient, verb string, args []string) error {
	fs := flag.NewFlagSet("peer "+verb, flag.ContinueOnError)
	asn := fs.Uint("asn", 0, "")
	password := fs.String("password", "", "")
	port := fs.Uint("port", 0, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch verb {
	case "add":
		addr, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		if *asn == 0 {
			return usagef("peer add needs --asn")
		}
		p, err := cl.AddPeer(ctx, &v1.AddPeerRequest{Peer: &v1.Peer{Address: addr, Asn: uint32(*asn), Password: *password, Port: uint32(*port)}})
		if err != nil {
			return err
		}
		return c.printPeers(p)
	case "list":
		r, err := cl.ListPeers(ctx, &v1.ListPeersRequest{})
		if err != nil {
			return err
		}
		return c.printPeers(r.Peers...)
	case "delete":
		addr, err := oneName(verb, pos)
		if err != nil {
			return err
		}
		if _, err := cl.DeletePeer(ctx, &v1.DeletePeerRequest{Address: addr}); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "peer %s deleted\n", addr)
		return nil
	}
	return usagef("unknown peer command %q: use add, list or delete", verb)
}

func (c *cli) route(ctx context.Context, cl v1.RouteServiceClient, verb string, args []string) error {
	fs := flag.NewFlagSet("route "+verb, flag.ContinueOnError)
	network := fs.String("network", "", "")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if verb != "list" {
		return usagef("unknown route command %q: use list", verb)
	}
	if *network == "" {
		return usagef("route list needs --network")
	}
	r, err := cl.ListRoutes(ctx, &v1.ListRoutesRequest{Network: *network})
	if err != nil {
		return err
	}
	if c.format == "json" {
		return c.printJSON(toMsgs(r.Routes), false)
	}
	var rows [][]string
	for _, rt := range r.Routes {
		from := rt.Endpoint
		if rt.Origin == v1.RouteOrigin_ROUTE_ORIGIN_IMPORTED {
			from = "peer " + rt.Peer
		}
		rows = append(rows, []string{rt.Prefix, rt.RouteDistinguisher, strconv.Itoa(int(rt.Label)), rt.NextHop,
			strings.Join(rt.RouteTargets, ","), model.FormatEncaps(rt.Encapsulations),
			stateName(rt.Origin, v1.RouteOrigin_name, "ROUTE_ORIGIN_"), from})
	}
	return c.table("PREFIX\tRD\tLABEL\tNEXT-HOP\tROUTE-TARGETS\tENCAP\tORIGIN\tFROM", rows)
}

func (c *cli) printPeers(ps ...*v1.PeerStatus) error {
	if c.format == "json" {
		return c.printJSON(toMsgs(ps), len(ps) == 1)
	}
	var rows [][]string
	for _, p := range ps {
		up := "-"
		if p.UptimeSeconds > 0 {
			up = (time.Duration(p.UptimeSeconds) * time.Second).String()
		}
		rows = append(rows, []string{p.Peer.GetAddress(), strconv.Itoa(int(p.Peer.GetAsn())), p.State, up,
			strconv.FormatUint(p.PrefixesSent, 10), strconv.FormatUint(p.PrefixesReceived, 10), p.Source})
	}
	return c.table("PEER\tASN\tSTATE\tUPTIME\tSENT\tRECEIVED\tSOURCE", rows)
}

// ---- output ----

func (c *cli) printJSON(msgs []proto.Message, single bool) error {
	mo := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}
	if single && len(msgs) == 1 {
		b, err := mo.Marshal(msgs[0])
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(c.out, string(b))
		return err
	}
	parts := make([]string, len(msgs))
	for i, m := range msgs {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			return err
		}
		parts[i] = "  " + string(b)
	}
	if len(parts) == 0 {
		_, err := fmt.Fprintln(c.out, "[]")
		return err
	}
	_, err := fmt.Fprintf(c.out, "[\n%s\n]\n", strings.Join(parts, ",\n"))
	return err
}

func toMsgs[T proto.Message](xs []T) []proto.Message {
	out := make([]proto.Message, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

func (c *cli) table(header string, rows [][]string) error {
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) printNetworks(ns ...*v1.VirtualNetwork) error {
	if c.format == "json" {
		return c.printJSON(toMsgs(ns), len(ns) == 1)
	}
	var rows [][]string
	for _, n := range ns {
		rows = append(rows, []string{n.Name, strconv.Itoa(int(n.Id)), strings.Join(n.Subnets, ","), n.AutoRouteTarget,
			orDash(strings.Join(n.ImportRouteTargets, ",")), orDash(strings.Join(n.ExportRouteTargets, ",")),
			model.FormatEncaps(n.Encapsulations), fmt.Sprintf("/%d,/%d", n.Ipv4BlockSize, n.Ipv6BlockSize)})
	}
	return c.table("NAME\tID\tSUBNETS\tAUTO-RT\tIMPORT-RT\tEXPORT-RT\tENCAP\tBLOCKS", rows)
}

func stateName[T ~int32](v T, names map[int32]string, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(names[int32(v)], prefix))
}

func (c *cli) printGateways(gs ...*v1.Gateway) error {
	if c.format == "json" {
		return c.printJSON(toMsgs(gs), len(gs) == 1)
	}
	var rows [][]string
	for _, g := range gs {
		seen := "-"
		if g.LastSeen != nil {
			seen = g.LastSeen.AsTime().UTC().Format(time.RFC3339)
		}
		rows = append(rows, []string{g.Name, g.UnderlayAddress, model.FormatEncaps(g.Encapsulations),
			stateName(g.State, v1.GatewayState_name, "GATEWAY_STATE_"), seen})
	}
	return c.table("NAME\tUNDERLAY\tENCAP\tSTATE\tLAST-SEEN", rows)
}

func (c *cli) printEndpoints(es ...*v1.Endpoint) error {
	if c.format == "json" {
		return c.printJSON(toMsgs(es), len(es) == 1)
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].Id < es[j].Id })
	var rows [][]string
	for _, e := range es {
		label := "-"
		if e.Label != 0 {
			label = strconv.Itoa(int(e.Label))
		}
		rows = append(rows, []string{e.Id, e.Network, e.Gateway, strings.Join(e.Addresses, ","), orDash(e.Mac), label,
			stateName(e.State, v1.EndpointState_name, "ENDPOINT_STATE_")})
	}
	return c.table("ID\tNETWORK\tGATEWAY\tADDRESSES\tMAC\tLABEL\tSTATE", rows)
}

func (c *cli) printIpam(st *v1.IpamStatus) error {
	if c.format == "json" {
		return c.printJSON([]proto.Message{st}, true)
	}
	var rows [][]string
	for _, s := range st.Subnets {
		rows = append(rows, []string{s.Subnet, fmt.Sprintf("%d/%d", s.Used, s.Size), fmt.Sprintf("/%d", s.BlockSize),
			fmt.Sprintf("%d/%d", len(s.Blocks), s.BlocksTotal)})
	}
	if err := c.table("SUBNET\tUSED\tBLOCK\tBLOCKS-LEASED", rows); err != nil {
		return err
	}
	var brows [][]string
	for _, s := range st.Subnets {
		for _, b := range s.Blocks {
			brows = append(brows, []string{b.Prefix, b.Gateway, fmt.Sprintf("%d/%d", b.Used, b.Size)})
		}
	}
	if len(brows) == 0 {
		return nil
	}
	fmt.Fprintln(c.out)
	return c.table("BLOCK\tGATEWAY\tUSED", brows)
}
