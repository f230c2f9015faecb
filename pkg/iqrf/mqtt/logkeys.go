package mqtt

// Log field keys of the package (log/slog).
const (
	logErr     = "err"
	logBroker  = "broker"
	logRetryIn = "retry_in"
)
