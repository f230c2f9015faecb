package overlay

// Marks on everything iotfabric creates in the kernel. They let the agent adopt
// its own objects after a restart, tell them from the operator's, remove orphans,
// and clean up with `vrouter-agent --cleanup`.
const (
	// RouteProtocol is the rtm_protocol of every route and rule iotfabric adds
	// (shown by `ip route` as "proto 165").
	RouteProtocol = 165
	// TableFirst and TableLast bound the routing tables of virtual networks.
	TableFirst = 7000
	TableLast  = 7999
	// probeTable is used only to probe for MPLS encapsulation support.
	probeTable = TableLast
	// RulePriority is the priority of the per-endpoint `ip rule iif X lookup T`;
	// priorities RulePriority..RulePriorityLast belong to iotfabric.
	RulePriority     = 7000
	RulePriorityLast = 7099
	// NexthopIDFirst..NexthopIDLast are the ids of iotfabric's nexthop objects.
	NexthopIDFirst = 0x10000000
	NexthopIDLast  = 0x1fffffff
	// IfPrefix starts the name of every interface iotfabric creates:
	// "iofu" + hex(remote) for MPLSoUDP, "iofg" + hex(remote) for MPLSoGRE,
	// "iofv" + table for VRF devices, "iofp" for short-lived feature probes,
	// EndpointIfPrefix for the pods' host-side veths.
	IfPrefix = "iof"
	// EndpointIfPrefix starts the host-side veths the CNI plugin creates
	// (pkg/cni.HostIfPrefix): the only iotfabric interfaces that are
	// endpoints; Set leaves them alone unless they are, Cleanup removes them.
	EndpointIfPrefix = IfPrefix + "e"
	// LegacyEndpointIfPrefix started the pods' veths before they took
	// EndpointIfPrefix (pkg/cni.LegacyHostIfPrefix). Endpoints recorded with
	// such a name keep working; Cleanup removes the veths too.
	LegacyEndpointIfPrefix = "iotf"
	// MPLSoUDPPort is the UDP destination port of MPLSoUDP (RFC 7510).
	MPLSoUDPPort = 6635
	// ipprotoMPLS is the IP protocol number of MPLS-in-IP (RFC 4023).
	ipprotoMPLS = 137
	// OverheadMPLSoUDP and OverheadMPLSoGRE are the bytes each encapsulation adds
	// (outer IPv4 + UDP or GRE + one label). Endpoints need an MTU of at most the
	// underlay's minus MaxOverhead: with policy tables the gateway's ICMP
	// "fragmentation needed" cannot be routed back into a network's table, so
	// path MTU discovery toward the pod does not work there (it does with VRFs).
	OverheadMPLSoUDP = 20 + 8 + 4
	OverheadMPLSoGRE = 20 + 4 + 4
	MaxOverhead      = OverheadMPLSoUDP
	// DefaultPlatformLabels is the value written to net.mpls.platform_labels when
	// the kernel's is lower than the highest label in use.
	DefaultPlatformLabels = 100000
)
