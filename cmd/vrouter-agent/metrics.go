package main

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// metricsHandler serves the data plane's metrics in the Prometheus text
// format: which encapsulation path endpoints and MPLS routes take, and what
// the BPF fast path did.
func metricsHandler(stats func() overlay.FastPathStats) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Write([]byte(formatMetrics(stats())))
	})
}

func formatMetrics(st overlay.FastPathStats) string {
	var b strings.Builder
	metric := func(name, typ, help string, samples ...any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for i := 0; i < len(samples); i += 2 {
			fmt.Fprintf(&b, "%s%s %v\n", name, samples[i], samples[i+1])
		}
	}
	enabled := 0
	if st.Enabled {
		enabled = 1
	}
	metric("iotfabric_agent_fast_path_enabled", "gauge", "1 when MPLSoUDP/MPLSoGRE take the BPF fast path (--fast-path and the kernel allow it), 0 for the kernel path.", "", enabled)
	metric("iotfabric_agent_endpoints", "gauge", "Local endpoints by the path their packets to remote gateways take (bpf: the fast path program is attached; kernel: the kernel tunnels).",
		`{path="bpf"}`, st.EndpointsFast, `{path="kernel"}`, st.EndpointsKernel)
	metric("iotfabric_agent_mpls_routes", "gauge", "Remote MPLSoUDP/MPLSoGRE routes by the path that encapsulates them (IPv6 prefixes always take the kernel path).",
		`{path="bpf"}`, st.RoutesFast, `{path="kernel"}`, st.RoutesKernel)
	metric("iotfabric_agent_fast_path_packets_total", "counter", "Packets the BPF fast path encapsulated (result=encapsulated) or handed to the kernel path unchanged (result=kernel: TTL about to expire, too big for the underlay, headers it could not push).",
		`{result="encapsulated"}`, st.Encapsulated, `{result="kernel"}`, st.ToKernel)
	return b.String()
}
