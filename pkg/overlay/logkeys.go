package overlay

// Log field keys of the package (log/slog). The Manager logs through
// Config.Logger.With(logComponent, "overlay").
const (
	logComponent = "component"
	logErr       = "err"
	logValue     = "value"
	logUse       = "use"
	logEncap     = "encap"
	logFOU       = "fou"
	logInterface = "interface"
	logMissing   = "missing"
	logNexthops  = "nexthops"
	logRemote    = "remote"
	logRoutes    = "routes"
	logTunnels   = "tunnels"
	logType      = "type"
	logVRFs      = "vrfs"
	logRules     = "rules"
)
