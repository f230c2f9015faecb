package cni

// Log field keys of the package (log/slog). The Server logs through
// Server.Log.With(logComponent, "cni").
const (
	logComponent = "component"
	logErr       = "err"
	logOp        = "op"
	logContainer = "container"
)
