package agent

// Log field keys of the package (log/slog). Every component logs through
// logger.With(logComponent, name).
const (
	logComponent      = "component"
	logErr            = "err"
	logReason         = "reason"
	logValue          = "value"
	logUse            = "use"
	logBlock          = "block"
	logBlocks         = "blocks"
	logCNISocket      = "cni_socket"
	logCode           = "code"
	logContainer      = "container"
	logController     = "controller"
	logControllers    = "controllers"
	logCount          = "count"
	logDeleted        = "deleted"
	logEndpoint       = "endpoint"
	logFullSync       = "full_sync"
	logGateway        = "gateway"
	logGeneration     = "generation"
	logIf             = "if"
	logNetwork        = "network"
	logNetworks       = "networks"
	logOfflineRecords = "offline_records"
	logOp             = "op"
	logPath           = "path"
	logResumeFrom     = "resume_from"
	logRetryIn        = "retry_in"
	logTook           = "took"
	logUnderlay       = "underlay"
)
