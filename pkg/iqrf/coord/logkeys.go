package coord

// Log field keys of the package (log/slog).
const (
	logErr     = "err"
	logFrame   = "frame"
	logNADR    = "nadr"
	logPNUM    = "pnum"
	logPCMD    = "pcmd"
	logAttempt = "attempt"
)
