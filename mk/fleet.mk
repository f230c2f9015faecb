# Gateway fleets (internal/fleet): capacity planning.
.PHONY: bench-fleet bench-fleet-mem bench-fleet-pair

BENCH_TARGETS += bench-fleet bench-fleet-mem bench-fleet-pair

FLEET_SIZES ?= 1000,5000,10000
FLEET_IDLE ?= 1m
FLEET_BIG_ROUTES ?= 200000
FLEET_PROFILES ?=
# Gateways started per second (default 500); Register costs an etcd read on an etcd-backed controller.
FLEET_START_RATE ?=

##@ bench
bench-fleet: ## Fleets of simulated gateways (real agents) against a controller process: memory/gw, sync time and bytes, change p50/p99, restart (stop/start, refused, bytes), idle bytes (FLEET_PROFILES=DIR keeps heap and CPU profiles); route state of 10,000 gateways in one network; a 200,000-route resync
	IOTFABRIC_BENCH_FLEET=$(FLEET_SIZES) IOTFABRIC_BENCH_FLEET_START_RATE=$(FLEET_START_RATE) IOTFABRIC_BENCH_FLEET_IDLE=$(FLEET_IDLE) IOTFABRIC_BENCH_FLEET_GRPC='$(FLEET_GRPC)' IOTFABRIC_BENCH_FLEET_PROFILES=$(FLEET_PROFILES) $(GO) test -count=1 -timeout 60m -run '^TestBenchFleet$$' -v ./internal/fleet/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}
	IOTFABRIC_BENCH_GATEWAYS=10000 $(GO) test -count=1 -timeout 30m -run '^TestSharedRouteStateMemory$$' -v ./pkg/vpn/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}
	IOTFABRIC_BIG_ROUTES=$(FLEET_BIG_ROUTES) $(GO) test -count=1 -timeout 20m -run '^TestBigRouteTable$$' -v ./pkg/agent/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}

.PHONY: test-deadpath-2m
##@ test
test-deadpath-2m: ## One real agent in a namespace: the path to the controller dropped 2 minutes while 30 endpoints are created; every route within 90 s of its return (root)
	IOTFABRIC_DEADPATH_OUTAGE=2m $(GO) test -count=1 -timeout 10m -run '^TestDeadPathNoticedByKeepalive$$' -v ./pkg/agent/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}

FLEET_MEM_SIZES ?= 1000,2000
# gRPC server options of the controllers (read=N,write=N,shared=0|1,window=N,connwindow=N),
# bare-gRPC rows with each ";"-separated set of FLEET_GRPC_FLOORS, FLEET_MEM_BARE=1: bare rows only.
FLEET_GRPC ?=
FLEET_GRPC_FLOORS ?=
FLEET_MEM_BARE ?=
##@ bench
bench-fleet-mem: ## Controller memory per idle gateway (RSS, heap, goroutine stacks) for fleets of FLEET_MEM_SIZES, beside bare gRPC connections (FLEET_GRPC_FLOORS="default;read=0;..." one row per set of server options); FLEET_PROFILES=DIR keeps the heap and goroutine profiles
	IOTFABRIC_BENCH_FLEET_MEM=$(FLEET_MEM_SIZES) IOTFABRIC_BENCH_FLEET_GRPC='$(FLEET_GRPC)' IOTFABRIC_BENCH_FLEET_GRPC_FLOORS='$(FLEET_GRPC_FLOORS)' IOTFABRIC_BENCH_FLEET_MEM_BARE=$(FLEET_MEM_BARE) IOTFABRIC_BENCH_FLEET_PROFILES=$(FLEET_PROFILES) $(GO) test -count=1 -timeout 30m -run '^TestBenchFleetMemory$$' -v ./internal/fleet/ 2>&1 | grep -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}

FLEET_PAIR_SIZES ?= 1000
##@ bench
bench-fleet-pair: ## Two controllers on one etcd, FLEET_PAIR_SIZES gateways streaming from both: one SIGKILLed (noticed, survivor's sessions kept, a change through the survivor p50/p99, bytes), then started again (until all stream from both, bytes); FLEET_PROFILES=DIR keeps CPU profiles of both
	IOTFABRIC_BENCH_FLEET_PAIR=$(FLEET_PAIR_SIZES) IOTFABRIC_BENCH_FLEET_START_RATE=$(FLEET_START_RATE) IOTFABRIC_BENCH_FLEET_PROFILES=$(FLEET_PROFILES) $(GO) test -count=1 -timeout 120m -run '^TestBenchFleetPair$$' -v ./internal/fleet/ 2>&1 | grep --line-buffered -vE '^(=== RUN|time=)' ; exit $${PIPESTATUS[0]}
