// Command cni-plugin is iotfabric's CNI plugin (installed as
// /opt/cni/bin/iotfabric). It asks the gateway's vrouter agent for the pod's
// address and MPLS label over a unix socket, creates the veth pair, puts the
// pod side in the pod's namespace with a /32 (and /128) address and a default
// route via 169.254.1.1, and lets the agent program the host side.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/internal/buildinfo"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/validate"
)

func init() {
	// Namespace handles are per thread: keep main on one.
	runtime.LockOSThread()
}

func main() {
	// A container runtime calls the plugin with CNI_COMMAND set and no
	// arguments; --version is for people and packaging checks, --install DIR
	// for an install-cni init container (the agent's image carries the plugin).
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println(buildinfo.Get("cni-plugin"))
		return
	}
	if len(os.Args) == 3 && (os.Args[1] == "--install" || os.Args[1] == "-install") {
		if err := install(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "iotfabric CNI plugin:", err)
			os.Exit(1)
		}
		return
	}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus},
		version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "iotfabric CNI plugin: pods join iotfabric virtual networks through the gateway's vrouter agent; "+buildinfo.Get("cni-plugin").String())
}

// cniErr converts an error from the agent into the CNI error JSON.
func cniErr(err error) error {
	var ce *cni.Error
	if errors.As(err, &ce) {
		return types.NewError(ce.Code, ce.Msg, ce.Details)
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// k8sArgs are the CNI_ARGS a Kubernetes runtime passes.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

func call(conf *NetConf, req *cni.Request) (*cni.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout())
	defer cancel()
	return (&cni.Client{Path: conf.Socket}).Do(ctx, req)
}

// nsHandle opens a namespace path ("" = the plugin's own).
func nsHandle(path string) (netns.NsHandle, error) {
	if path == "" {
		return netns.Get()
	}
	return netns.GetFromPath(path)
}

func handleAt(ns netns.NsHandle) (*netlink.Handle, error) {
	return netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
}

// checkArgs validates CNI_CONTAINERID and CNI_IFNAME with the rules the
// agent and the controller apply to the endpoint id they make
// (pkg/validate), so that an ADD the plugin lets through is never refused
// for its id further on.
func checkArgs(args *skel.CmdArgs) error {
	if err := validate.ContainerID(args.ContainerID); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID: "+err.Error(), "")
	}
	if err := validate.InterfaceName(args.IfName); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME: "+err.Error(), "")
	}
	return nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := checkArgs(args); err != nil {
		return err
	}
	var ka k8sArgs
	ka.IgnoreUnknown = true
	if err := types.LoadArgs(args.Args, &ka); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS cannot be parsed", err.Error())
	}
	podNS, err := netns.GetFromPath(args.Netns)
	if err != nil {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("network namespace %s cannot be opened: give the path of the pod's namespace in CNI_NETNS", validate.Quote(args.Netns)), err.Error())
	}
	defer podNS.Close()
	network := conf.Network
	if network == "" {
		network = conf.NamespaceNetworks[string(ka.K8S_POD_NAMESPACE)]
	}
	if network == "" && ka.K8S_POD_NAMESPACE == "" {
		return types.NewError(types.ErrInvalidNetworkConfig, `no network: set "network" in the configuration, or pass K8S_POD_NAMESPACE in CNI_ARGS`, "")
	}
	base := cni.Request{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns}
	req := base
	req.Op, req.Network, req.PodNamespace, req.PodName, req.PodUID = cni.OpAdd, network, string(ka.K8S_POD_NAMESPACE), string(ka.K8S_POD_NAME), string(ka.K8S_POD_UID)
	resp, err := call(conf, &req)
	if err != nil {
		return cniErr(err)
	}
	ep := resp.Endpoint
	if ep == nil || len(ep.Addresses) == 0 || ep.HostIf == "" {
		return types.NewError(types.ErrInternal, "the vrouter agent answered without an endpoint", "")
	}
	result, err := setup(conf, args, podNS, resp)
	if err != nil {
		// Roll back: the veth pair (if any), then the allocation.
		undo(resp.HostNetns, ep.HostIf, podNS, args.IfName)
		del := base
		del.Op = cni.OpDel
		_, _ = call(conf, &del)
		return cniErr(err)
	}
	att := base
	att.Op, att.MAC = cni.OpAttach, result.Interfaces[len(result.Interfaces)-1].Mac
	if _, err := call(conf, &att); err != nil {
		undo(resp.HostNetns, ep.HostIf, podNS, args.IfName)
		del := base
		del.Op = cni.OpDel
		_, _ = call(conf, &del)
		return cniErr(err)
	}
	return types.PrintResult(result, conf.CNIVersion)
}

// setup creates the veth pair and configures the pod side.
func setup(conf *NetConf, args *skel.CmdArgs, podNS netns.NsHandle, resp *cni.Response) (*current.Result, error) {
	ep := resp.Endpoint
	hostNS, err := nsHandle(resp.HostNetns)
	if err != nil {
		return nil, fmt.Errorf("open the gateway's namespace %q: %w", resp.HostNetns, err)
	}
	defer hostNS.Close()
	hh, err := handleAt(hostNS)
	if err != nil {
		return nil, fmt.Errorf("netlink in the gateway's namespace: %w", err)
	}
	defer hh.Close()
	ph, err := handleAt(podNS)
	if err != nil {
		return nil, fmt.Errorf("netlink in the pod's namespace: %w", err)
	}
	defer ph.Close()

	// A retried ADD: remove what an earlier attempt left.
	if l, err := hh.LinkByName(ep.HostIf); err == nil {
		_ = hh.LinkDel(l)
	}
	if l, err := ph.LinkByName(args.IfName); err == nil {
		if _, isVeth := l.(*netlink.Veth); !isVeth {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("the pod's namespace already has an interface %s that is not a veth: pick another CNI_IFNAME", args.IfName), "")
		}
		_ = ph.LinkDel(l)
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = ep.HostIf, conf.MTU
	veth := &netlink.Veth{LinkAttrs: la, PeerName: args.IfName, PeerNamespace: netlink.NsFd(int(podNS))}
	if err := hh.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth pair %s/%s: %w", ep.HostIf, args.IfName, err)
	}
	host, err := hh.LinkByName(ep.HostIf)
	if err != nil {
		return nil, fmt.Errorf("veth %s: %w", ep.HostIf, err)
	}
	pod, err := ph.LinkByName(args.IfName)
	if err != nil {
		return nil, fmt.Errorf("veth %s in the pod: %w", args.IfName, err)
	}
	gw := net.IP(resp.Gateway.AsSlice())
	if gw == nil {
		gw = net.IPv4(169, 254, 1, 1).To4()
	}
	result := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: conf.DNS}
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, err
		}
		result = prev
	}
	result.Interfaces = append(result.Interfaces,
		&current.Interface{Name: ep.HostIf, Mac: host.Attrs().HardwareAddr.String()},
		&current.Interface{Name: args.IfName, Mac: pod.Attrs().HardwareAddr.String(), Sandbox: args.Netns})
	podIdx := len(result.Interfaces) - 1
	if err := ph.LinkSetUp(pod); err != nil {
		return nil, fmt.Errorf("set %s up in the pod: %w", args.IfName, err)
	}
	has6 := false
	for _, a := range ep.Addresses {
		ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
		addr := &netlink.Addr{IPNet: ipn}
		ipc := &current.IPConfig{Address: *ipn, Interface: current.Int(podIdx)}
		if a.Is4() {
			ipc.Gateway = gw
		} else {
			has6 = true
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := ph.AddrAdd(pod, addr); err != nil {
			return nil, fmt.Errorf("address %s on %s: %w", a, args.IfName, err)
		}
		result.IPs = append(result.IPs, ipc)
	}
	idx := pod.Attrs().Index
	routes := []*netlink.Route{
		{LinkIndex: idx, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK},
		{LinkIndex: idx, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: gw},
	}
	result.Routes = append(result.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw})
	if has6 {
		routes = append(routes, &netlink.Route{LinkIndex: idx, Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Scope: netlink.SCOPE_LINK})
		result.Routes = append(result.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}})
	}
	for _, r := range routes {
		if err := ph.RouteReplace(r); err != nil {
			return nil, fmt.Errorf("route %s in the pod: %w", r.Dst, err)
		}
	}
	return result, nil
}

// undo removes the veth pair (best effort; deleting one end removes both).
func undo(hostNetns, hostIf string, podNS netns.NsHandle, ifName string) {
	if hostNS, err := nsHandle(hostNetns); err == nil {
		if h, err := handleAt(hostNS); err == nil {
			if l, err := h.LinkByName(hostIf); err == nil {
				_ = h.LinkDel(l)
			}
			h.Close()
		}
		hostNS.Close()
	}
	if podNS.IsOpen() {
		if h, err := handleAt(podNS); err == nil {
			if l, err := h.LinkByName(ifName); err == nil {
				if _, ok := l.(*netlink.Veth); ok {
					_ = h.LinkDel(l)
				}
			}
			h.Close()
		}
	}
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	resp, err := call(conf, &cni.Request{Op: cni.OpDel, ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns})
	if err != nil {
		return cniErr(err)
	}
	podNS := netns.None()
	if args.Netns != "" {
		if h, err := netns.GetFromPath(args.Netns); err == nil {
			podNS = h
			defer h.Close()
		}
	}
	// The host side is derived from the id, also when the agent no longer
	// knew the endpoint (a DEL retried after it succeeded once); a pod added
	// before the veth prefix changed has the legacy name.
	id := cni.EndpointID(args.ContainerID, args.IfName)
	undo(resp.HostNetns, cni.HostIfName(id), podNS, args.IfName)
	undo(resp.HostNetns, cni.LegacyHostIfName(id), netns.None(), "")
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs the prevResult of the ADD", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
	}
	resp, err := call(conf, &cni.Request{Op: cni.OpCheck, ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns})
	if err != nil {
		return cniErr(err)
	}
	ep := resp.Endpoint
	var diffs []string
	want := map[string]bool{}
	for _, a := range ep.Addresses {
		want[a.String()] = true
	}
	inPrev := map[string]bool{}
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface < len(prev.Interfaces) && prev.Interfaces[*ipc.Interface].Name == args.IfName {
			inPrev[ipc.Address.IP.String()] = true
		}
	}
	for a := range want {
		if !inPrev[a] {
			diffs = append(diffs, fmt.Sprintf("prevResult lacks %s, which the agent gave %s", a, args.IfName))
		}
	}
	podNS, err := netns.GetFromPath(args.Netns)
	if err != nil {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("network namespace %s cannot be opened", validate.Quote(args.Netns)), err.Error())
	}
	defer podNS.Close()
	ph, err := handleAt(podNS)
	if err != nil {
		return cniErr(err)
	}
	defer ph.Close()
	link, err := ph.LinkByName(args.IfName)
	if err != nil {
		diffs = append(diffs, fmt.Sprintf("interface %s is missing in the pod", args.IfName))
	} else {
		if link.Attrs().Flags&net.FlagUp == 0 {
			diffs = append(diffs, fmt.Sprintf("interface %s is down", args.IfName))
		}
		if ep.MAC != "" && link.Attrs().HardwareAddr.String() != ep.MAC {
			diffs = append(diffs, fmt.Sprintf("interface %s has MAC %s, the agent has %s", args.IfName, link.Attrs().HardwareAddr, ep.MAC))
		}
		addrs, _ := ph.AddrList(link, netlink.FAMILY_ALL)
		have := map[string]bool{}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				continue
			}
			have[a.IP.String()] = true
		}
		for a := range want {
			if !have[a] {
				diffs = append(diffs, fmt.Sprintf("address %s is missing on %s", a, args.IfName))
			}
		}
		for a := range have {
			if !want[a] {
				diffs = append(diffs, fmt.Sprintf("address %s on %s was not given by the agent", a, args.IfName))
			}
		}
		routes, _ := ph.RouteList(link, netlink.FAMILY_V4)
		def := false
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(net.IP(resp.Gateway.AsSlice())) {
				def = true
			}
		}
		if !def && slices.ContainsFunc(ep.Addresses, func(a netip.Addr) bool { return a.Is4() }) {
			diffs = append(diffs, fmt.Sprintf("no default route via %s on %s", resp.Gateway, args.IfName))
		}
	}
	if hostNS, err := nsHandle(resp.HostNetns); err == nil {
		if hh, err := handleAt(hostNS); err == nil {
			if l, err := hh.LinkByName(ep.HostIf); err != nil {
				diffs = append(diffs, fmt.Sprintf("host-side veth %s is missing", ep.HostIf))
			} else if l.Attrs().Flags&net.FlagUp == 0 {
				diffs = append(diffs, fmt.Sprintf("host-side veth %s is down (the agent has not programmed it)", ep.HostIf))
			}
			hh.Close()
		}
		hostNS.Close()
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		return types.NewError(types.ErrInternal, "the pod's network differs from what the iotfabric agent holds", strings.Join(diffs, "; "))
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	req := &cni.Request{Op: cni.OpGC}
	for _, a := range conf.ValidAttachments {
		req.Valid = append(req.Valid, cni.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	resp, err := call(conf, req)
	if err != nil {
		return cniErr(err)
	}
	hostNS, err := nsHandle(resp.HostNetns)
	if err != nil {
		return cniErr(err)
	}
	defer hostNS.Close()
	hh, err := handleAt(hostNS)
	if err != nil {
		return cniErr(err)
	}
	defer hh.Close()
	kept := map[string]bool{}
	for _, k := range resp.Kept {
		kept[k] = true
	}
	links, err := hh.LinkList()
	if err != nil {
		return cniErr(err)
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		ours := strings.HasPrefix(name, cni.HostIfPrefix) || strings.HasPrefix(name, cni.LegacyHostIfPrefix)
		if _, ok := l.(*netlink.Veth); !ok || !ours || kept[name] {
			continue
		}
		if err := hh.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("remove leftover veth %s: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cniErr(err)
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := call(conf, &cni.Request{Op: cni.OpStatus}); err != nil {
		var ce *cni.Error
		if errors.As(err, &ce) && ce.Code == cni.CodeTryAgainLater {
			return types.NewError(types.ErrPluginNotAvailable, "the iotfabric vrouter agent cannot serve: "+ce.Msg, ce.Details)
		}
		return cniErr(err)
	}
	return nil
}
