package iqrftest

// Log field keys of the package (log/slog). The simulator logs through
// Sim.Logger.With(logComponent, "iqrf-sim").
const (
	logComponent = "component"
	logErr       = "err"
	logFrame     = "frame"
)
