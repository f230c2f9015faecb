# IQRF collector (pkg/iqrf, cmd/iqrf-collector): benchmark, tests, fuzzing.
.PHONY: bench-iqrf fuzz-iqrf test-iqrf

BENCH_TARGETS += bench-iqrf
IQRF_FUZZTIME ?= 30s

##@ bench
bench-iqrf: ## IQRF: DPA frames decoded/s on one core (goal 5 M) and response-frame-to-carbon p50/p99 (goal 100 ms), beside peers
	IQRF_BENCH=1 $(GO) test -count=1 -timeout 10m -run '^TestBench' -v ./pkg/iqrf/bench/ 2>&1 | grep -E '^(BENCH|--- |ok|FAIL|PASS)|_test.go'; exit $${PIPESTATUS[0]}

##@ test
test-iqrf: ## IQRF: every collector test (simulated coordinator on a pty, real carbon-cache and mosquitto)
	$(GO) test -count=1 ./pkg/iqrf/... ./cmd/iqrf-collector/...

fuzz-iqrf: ## IQRF: run each decoder's fuzzer for IQRF_FUZZTIME (default 30s); new corpus entries land in the build cache
	@set -e; for t in dpa:FuzzDecode uart:FuzzDeframer sensor:FuzzReadWithTypes sensor:FuzzFRC spi:FuzzParseRead cdc:FuzzParser mqtt:FuzzHandleRequest collector:FuzzDecodeRecord; do \
	  pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$pkg $$fn"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(IQRF_FUZZTIME) ./pkg/iqrf/$$pkg/; done
