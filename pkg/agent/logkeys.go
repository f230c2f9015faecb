package agent

// Log field keys of the package (log/slog). Every component logs through
// logger.With(logComponent, name).
const (
	logComponent = "component"
	logErr       = "err"
	logReason    = "reason"
	logValue     = "value"
	logUse       = "use"
)
