package overlay

// Log field keys of the package (log/slog). The Manager logs through
// Config.Logger.With(logComponent, "overlay").
const (
	logComponent = "component"
	logErr       = "err"
	logValue     = "value"
	logUse       = "use"
)
