# Bounded logs (internal/logbound): the hostile run.
.PHONY: hostile-logs

HOSTILE_SECONDS ?= 600

##@ test
hostile-logs: ## Logs: a hostile run of HOSTILE_SECONDS (default 600) at once: serial noise to the collector, a refused-call flood at the controller, an agent with 5,000 unprogrammable routes; prints each log's bytes/minute and the total (bound 10 MB per 10 minutes; as root)
	@set -e; dir=$$(mktemp -d); \
	for t in ./cmd/iqrf-collector:TestSerialNoiseLogBounded ./cmd/controller:TestRefusedCallFloodLogBounded ./cmd/vrouter-agent:TestUnprogrammableRoutesLogBounded; do \
	  pkg=$${t%%:*}; fn=$${t##*:}; \
	  IOTFABRIC_HOSTILE_SECONDS=$(HOSTILE_SECONDS) IOTFABRIC_TEST_STRICT=1 $(GO) test -count=1 -timeout 30m -v -run "^$$fn$$" $$pkg > $$dir/$$fn.out 2>&1 & \
	done; rc=0; wait $$(jobs -p) || rc=1; \
	grep -h -E 'bytes/minute|^(--- |FAIL|ok)' $$dir/*.out; \
	awk '/bytes\/minute/ { for (i = 1; i <= NF; i++) if ($$i == "bytes/minute,") s += $$(i-1) } END { printf "hostile run, all three: %.0f bytes/minute, %.2f MB per 10 minutes (bound 10 MB)\n", s, s*10/1e6 }' $$dir/*.out; \
	rm -rf $$dir; exit $$rc
