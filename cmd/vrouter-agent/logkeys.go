package main

// Log field keys of the command (log/slog).
const (
	logComponent   = "component"
	logErr         = "err"
	logControllers = "controllers"
	logFeatures    = "features"
	logGateway     = "gateway"
	logState       = "state"
)
