package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// printJSON writes one object as indented JSON, or a list as a JSON array with one object per line.
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

// stateName turns an enum value into its lower-case name without prefix: GATEWAY_STATE_UP -> "up".
func stateName[T ~int32](v T, names map[int32]string, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(names[int32(v)], prefix))
}

const networkHeader = "NAME\tID\tSUBNETS\tAUTO-RT\tIMPORT-RT\tEXPORT-RT\tENCAP\tBLOCKS\tCONDITIONS"

func (c *cli) printNetworks(ns ...*v1.VirtualNetwork) error {
	if c.format == "json" {
		return c.printJSON(toMsgs(ns), len(ns) == 1)
	}
	if err := c.table(networkHeader, networkRows(ns)); err != nil {
		return err
	}
	return printConditions(c, "NETWORK", ns, (*v1.VirtualNetwork).GetName, (*v1.VirtualNetwork).GetConditions)
}

// conditionTypes is the CONDITIONS column of a listing: the types, or "-".
func conditionTypes(cs []*v1.Condition) string {
	var ts []string
	for _, cd := range cs {
		ts = append(ts, cd.Type)
	}
	return orDash(strings.Join(ts, ","))
}

func networkRows(ns []*v1.VirtualNetwork) [][]string {
	var rows [][]string
	for _, n := range ns {
		rows = append(rows, []string{n.Name, strconv.Itoa(int(n.Id)), strings.Join(n.Subnets, ","), n.AutoRouteTarget,
			orDash(strings.Join(n.ImportRouteTargets, ",")), orDash(strings.Join(n.ExportRouteTargets, ",")),
			model.FormatEncaps(n.Encapsulations), fmt.Sprintf("/%d,/%d", n.Ipv4BlockSize, n.Ipv6BlockSize), conditionTypes(n.Conditions)})
	}
	return rows
}

// printConditions prints the conditions reported on the objects shown, one
// row per object and condition (nothing when there are none).
func printConditions[T any](c *cli, noun string, objs []T, name func(T) string, conds func(T) []*v1.Condition) error {
	var rows [][]string
	for _, o := range objs {
		for _, cd := range conds(o) {
			rows = append(rows, []string{name(o), cd.Type, cd.Message})
		}
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintln(c.out)
	return c.table(noun+"\tCONDITION\tMESSAGE", rows)
}

const gatewayHeader = "NAME\tUNDERLAY\tENCAP\tSTATE\tLAST-SEEN"

func (c *cli) printGateways(gs ...*v1.Gateway) error {
	if c.format == "json" {
		return c.printJSON(toMsgs(gs), len(gs) == 1)
	}
	return c.table(gatewayHeader, gatewayRows(gs))
}

// printGateway prints one gateway and, under it, what its agent said of
// itself at its last registration (gateway show).
func (c *cli) printGateway(g *v1.Gateway) error {
	if err := c.printGateways(g); err != nil || c.format == "json" {
		return err
	}
	fmt.Fprintln(c.out)
	return c.table("ARCH\tAGENT-VERSION\tKERNEL-FEATURES", [][]string{{orDash(g.Architecture), orDash(g.AgentVersion),
		orDash(strings.Join(g.KernelFeatures, ","))}})
}

func gatewayRows(gs []*v1.Gateway) [][]string {
	var rows [][]string
	for _, g := range gs {
		seen := "-"
		if g.LastSeen != nil {
			seen = g.LastSeen.AsTime().UTC().Format(time.RFC3339)
		}
		rows = append(rows, []string{g.Name, g.UnderlayAddress, model.FormatEncaps(g.Encapsulations),
			stateName(g.State, v1.GatewayState_name, "GATEWAY_STATE_"), seen})
	}
	return rows
}

const endpointHeader = "ID\tNETWORK\tGATEWAY\tADDRESSES\tMAC\tLABEL\tSTATE\tPOD\tCONDITIONS"

func (c *cli) printEndpoints(es ...*v1.Endpoint) error {
	if c.format == "json" {
		return c.printJSON(toMsgs(es), len(es) == 1)
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].Id < es[j].Id })
	if err := c.table(endpointHeader, endpointRows(es)); err != nil {
		return err
	}
	return printConditions(c, "ENDPOINT", es, (*v1.Endpoint).GetId, (*v1.Endpoint).GetConditions)
}

func endpointRows(es []*v1.Endpoint) [][]string {
	var rows [][]string
	for _, e := range es {
		label := "-"
		if e.Label != 0 {
			label = strconv.Itoa(int(e.Label))
		}
		pod := "-"
		if p := e.GetPod(); p.GetName() != "" {
			pod = p.Namespace + "/" + p.Name
		}
		rows = append(rows, []string{e.Id, e.Network, e.Gateway, strings.Join(e.Addresses, ","), orDash(e.Mac), label,
			stateName(e.State, v1.EndpointState_name, "ENDPOINT_STATE_"), pod, conditionTypes(e.Conditions)})
	}
	return rows
}

func (c *cli) printIpam(st *v1.IpamStatus) error {
	if c.format == "json" {
		return c.printJSON([]proto.Message{st}, true)
	}
	var rows [][]string
	for _, s := range st.Subnets {
		rows = append(rows, []string{s.Subnet, fmt.Sprintf("%d/%s", s.Used, exact(s.SizeDecimal, s.Size)), fmt.Sprintf("/%d", s.BlockSize),
			fmt.Sprintf("%d/%s", len(s.Blocks), exact(s.BlocksTotalDecimal, s.BlocksTotal))})
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

const peerHeader = "PEER\tASN\tSTATE\tUPTIME\tSENT\tRECEIVED\tMAX-PREFIXES\tSOURCE\tREASON"

func (c *cli) printPeers(ps ...*v1.PeerStatus) error {
	if c.format == "json" {
		return c.printJSON(toMsgs(ps), len(ps) == 1)
	}
	return c.table(peerHeader, peerRows(ps))
}

func peerRows(ps []*v1.PeerStatus) [][]string {
	var rows [][]string
	for _, p := range ps {
		up := "-"
		if p.UptimeSeconds > 0 {
			up = (time.Duration(p.UptimeSeconds) * time.Second).String()
		}
		limit := "-"
		if p.MaxPrefixes != 0 {
			limit = strconv.FormatUint(uint64(p.MaxPrefixes), 10)
		}
		rows = append(rows, []string{p.Peer.GetAddress(), strconv.Itoa(int(p.Peer.GetAsn())), p.State, up,
			strconv.FormatUint(p.PrefixesSent, 10), strconv.FormatUint(p.PrefixesReceived, 10), limit, p.Source, orDash(p.Reason)})
	}
	return rows
}

const routeHeader = "PREFIX\tRD\tLABEL\tNEXT-HOP\tROUTE-TARGETS\tENCAP\tORIGIN\tFROM"

func routeRows(rs []*v1.Route) [][]string {
	var rows [][]string
	for _, rt := range rs {
		from := rt.Endpoint
		if rt.Origin == v1.RouteOrigin_ROUTE_ORIGIN_IMPORTED {
			from = "peer " + rt.Peer
		}
		rows = append(rows, []string{rt.Prefix, rt.RouteDistinguisher, strconv.Itoa(int(rt.Label)), rt.NextHop,
			strings.Join(rt.RouteTargets, ","), model.FormatEncaps(rt.Encapsulations),
			stateName(rt.Origin, v1.RouteOrigin_name, "ROUTE_ORIGIN_"), from})
	}
	return rows
}

// deleted confirms a deletion; the same line whatever the output format.
func (c *cli) deleted(noun, name string) error {
	_, err := fmt.Fprintf(c.out, "%s %s deleted\n", noun, name)
	return err
}

// listed prints a listing page by page: show is called for each page.
func listed[T proto.Message](c *cli, header string, rows func([]T) [][]string) (show func([]T) error, end func() error) {
	s := c.stream(header)
	show = func(page []T) error {
		if c.format == "json" {
			return s.msgs(toMsgs(page))
		}
		return s.rows(rows(page))
	}
	return show, s.end
}

// exact returns a count from its decimal field (exact), else from its
// uint64 field (which saturates at 2^64-1; a controller of an earlier version
// sends only that one).
func exact(decimal string, n uint64) string {
	if decimal != "" {
		return decimal
	}
	return strconv.FormatUint(n, 10)
}
