// Package logkey owns the names of the log fields every iotfabric component
// uses, so that the logs of all components can be searched by the same
// keys: the log/slog keys, and the values of the Component key that each
// part adds with logger.With(logkey.Component, logkey.ComponentXxx).
//
// Keys are snake_case. A concept has one key everywhere (a gateway is
// always "gateway", never "gw"); a list of them takes the plural.
//
// Non-test code passes no string literal as a log key; TestNoLiteralKeys
// checks every file but the generated proto/ tree (and, for now, pkg/api
// and pkg/server).
package logkey

// Key of the part of a program that logs a line; its values are the
// Component* constants.
const Component = "component"

// Values of the Component key.
const (
	ComponentAgent        = "agent"         // gateway agent: controller links, CNI socket
	ComponentCore         = "core"          // gateway agent's core (state owner)
	ComponentReconcile    = "reconcile"     // gateway agent's reconciler
	ComponentStateFile    = "state-file"    // gateway agent's state file source
	ComponentVRouterAgent = "vrouter-agent" // vrouter-agent command
	ComponentOverlay      = "overlay"       // kernel data plane manager
	ComponentCNI          = "cni"           // CNI request server
	ComponentBGP          = "bgp"           // controller's BGP speaker
	ComponentVPN          = "vpn"           // controller's VPN route runner
	ComponentAudit        = "audit"         // controller's audit log of API calls
	ComponentREST         = "rest"          // controller's REST API (pkg/rest)
	ComponentConsole      = "console"       // controller's web console (pkg/console)
	ComponentEnroll       = "enroll"        // controller's enrollment authority (tokens, certificates, revocation)
	ComponentRenew        = "renew"         // a client's certificate renewal
	ComponentCollector    = "collector"     // IQRF collector
	ComponentGraphite     = "graphite"      // IQRF collector's Graphite sink
	ComponentMQTT         = "mqtt"          // IQRF collector's MQTT sink
	ComponentIQRFSim      = "iqrf-sim"      // IQRF coordinator simulator
	ComponentKube         = "kube"          // controller's Kubernetes reconciler (pkg/kube)
	ComponentPodWatch     = "podwatch"      // agent's Kubernetes pod informer
)

// Field keys.
const (
	Err = "err" // an error

	// Fabric objects.
	Controller  = "controller"  // a controller (its address or name)
	Controllers = "controllers" // controller addresses
	Gateway     = "gateway"     // a gateway name
	Gateways    = "gateways"    // gateway names or a count of them
	Network     = "network"     // a virtual network name
	Networks    = "networks"    // virtual network names or a count of them
	ID          = "id"          // an object's identifier
	Endpoint    = "endpoint"    // an endpoint identifier
	Container   = "container"   // a CNI container ID
	Interface   = "interface"   // a network interface name
	Addresses   = "addresses"   // an endpoint's addresses
	Subnets     = "subnets"     // a network's subnets
	Underlay    = "underlay"    // a gateway's underlay address
	Block       = "block"       // an address block
	Blocks      = "blocks"      // address blocks
	Instance    = "instance"    // a controller instance
	Markers     = "markers"     // liveness markers
	Key         = "key"         // a store key
	Event       = "event"       // an event's kind
	Arch        = "arch"        // a gateway's architecture
	Version     = "version"     // a software version
	Features    = "features"    // data plane features

	// Data plane.
	Encap    = "encap"    // an encapsulation
	FOU      = "fou"      // FOU ports
	Remote   = "remote"   // a tunnel's remote address
	Routes   = "routes"   // routes (a count or a list)
	Nexthops = "nexthops" // nexthops
	Tunnels  = "tunnels"  // tunnels
	VRFs     = "vrfs"     // VRFs
	Rules    = "rules"    // policy rules
	Missing  = "missing"  // what is missing
	Use      = "use"      // the spelling to use instead
	Value    = "value"    // a deprecated spelling found

	// BGP.
	Peer        = "peer"        // a BGP peer address
	Peers       = "peers"       // BGP peers
	ASN         = "asn"         // an AS number
	RouterID    = "router_id"   // a BGP router ID
	ListenPort  = "listen_port" // a BGP listen port
	MD5         = "md5"         // whether a peer uses TCP MD5
	RouteTarget = "rt"          // a route target
	Announced   = "announced"   // routes announced
	Withdrawn   = "withdrawn"   // routes withdrawn
	Limit       = "limit"       // a configured maximum (prefixes, routes)
	Suppressed  = "suppressed"  // like lines not written since the last one (rate limit)

	// Agent protocol and state.
	Op             = "op"              // a CNI operation
	Code           = "code"            // an error code
	Reason         = "reason"          // why something happened
	State          = "state"           // a state (of a peer, a file...)
	Path           = "path"            // a file path
	CNISocket      = "cni_socket"      // the CNI socket path
	Generation     = "generation"      // a state generation
	FullSync       = "full_sync"       // whether a sync is full
	ResumeFrom     = "resume_from"     // the revision a stream resumes from
	OfflineRecords = "offline_records" // records kept while offline
	Deleted        = "deleted"         // what was deleted

	// IQRF.
	Node     = "node"     // an IQRF node address
	Nodes    = "nodes"    // IQRF nodes
	Frame    = "frame"    // a DPA frame
	PNUM     = "pnum"     // a DPA peripheral number
	PCMD     = "pcmd"     // a DPA peripheral command
	HWPID    = "hwpid"    // a DPA hardware profile ID
	Sensors  = "sensors"  // sensors
	Index    = "index"    // an index
	Type     = "type"     // a type
	Nth      = "nth"      // the n-th of its type
	Length   = "length"   // a length
	Response = "response" // a response
	Status   = "status"   // a status
	Attempt  = "attempt"  // an attempt number
	Poll     = "poll"     // a poll period
	Broker   = "broker"   // an MQTT broker
	Graphite = "graphite" // a Graphite (carbon) address
	MQTT     = "mqtt"     // an MQTT broker URL
	Buffer   = "buffer"   // a buffer directory

	// Controller server.
	EtcdEndpoints = "endpoints"  // etcd endpoint URLs
	API           = "api"        // the gRPC API's listen address
	Metrics       = "metrics"    // the metrics listen address
	REST          = "rest"       // the REST API's listen address
	ClientCA      = "client_ca"  // the CA that client certificates must chain to
	Method        = "method"     // a gRPC method
	Library       = "library"    // a library whose own lines these are, within a component (gobgp within bgp)
	Identity      = "identity"   // who called: admin, viewer, gateway:<name>
	Object        = "object"     // what a call was about (a name or id)
	From          = "from"       // a value before a change
	To            = "to"         // a value after a change
	Panic         = "panic"      // a recovered panic's value
	Stack         = "stack"      // a goroutine stack
	Serial        = "serial"     // a certificate serial (hex)
	Via           = "via"        // how a certificate was issued: join or renew
	NotAfter      = "not_after"  // a certificate's expiry
	Enrollment    = "enrollment" // whether the controller signs certificates

	// Generic.
	Addr     = "addr"     // a network address
	Count    = "count"    // a count
	Took     = "took"     // a duration
	Interval = "interval" // an interval
	RetryIn  = "retry_in" // the delay before a retry
	Attempts = "attempts" // how many attempts (failed ones, in a row)

	// Bounded logs (internal/logbound).
	Examples = "examples" // the first few values of the lines left out
	Failures = "failures" // how many things failed (the err field lists the first few)

	// Kubernetes.
	KubeNamespace = "k8s_namespace" // a Kubernetes namespace
	KubePod       = "k8s_pod"       // a Kubernetes pod (namespace/name)
	KubeNode      = "k8s_node"      // a Kubernetes node
	KubeUID       = "k8s_uid"       // a Kubernetes object's UID
	KubeObject    = "k8s_object"    // a Kubernetes object (kind/name)
	Leader        = "leader"        // the holder of a leader lease
)
