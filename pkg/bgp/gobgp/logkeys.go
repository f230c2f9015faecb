package gobgp

// Log field keys of the package (log/slog). The Speaker logs through the
// logger it is given; GoBGP's own lines carry logComponent "gobgp".
const (
	logComponent  = "component"
	logErr        = "err"
	logPeer       = "peer"
	logState      = "state"
	logASN        = "asn"
	logRouterID   = "router_id"
	logListenPort = "listen_port"
	logPeers      = "peers"
	logRoutes     = "routes"
	logMD5        = "md5"
)
