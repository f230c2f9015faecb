package main

// Log field keys of the command (log/slog). Each part logs through
// log.With(logComponent, name): collector (with the coordinator link),
// graphite, mqtt.
const (
	logComponent = "component"
	logErr       = "err"
	logAddr      = "addr"
	logPoll      = "poll"
	logInterval  = "interval"
	logGraphite  = "graphite"
	logMQTT      = "mqtt"
	logBuffer    = "buffer"
)
