package collector

// Log field keys of the package (log/slog).
const (
	logErr      = "err"
	logNode     = "node"
	logNodes    = "nodes"
	logCount    = "count"
	logHWPID    = "hwpid"
	logSensors  = "sensors"
	logIndex    = "index"
	logType     = "type"
	logNth      = "nth"
	logLength   = "length"
	logResponse = "response"
	logStatus   = "status"
)
