package graphite

// Log field keys of the package (log/slog).
const (
	logErr     = "err"
	logAddr    = "addr"
	logRetryIn = "retry_in"
)
