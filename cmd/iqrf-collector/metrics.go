package main

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/iqrf/collector"
	"github.com/iotfabric/iotfabric/pkg/iqrf/graphite"
	"github.com/iotfabric/iotfabric/pkg/iqrf/mqtt"
	"github.com/iotfabric/iotfabric/pkg/iqrf/queue"
)

// metricsHandler serves the counters in the Prometheus text format.
func metricsHandler(col *collector.Collector, q *queue.Queue, g *graphite.Stats, m *mqtt.Stats) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		metric := func(name, typ, help string, samples ...any) {
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
			for i := 0; i < len(samples); i += 2 {
				fmt.Fprintf(&b, "%s%s %v\n", name, samples[i], samples[i+1])
			}
		}
		cm := col.Metrics()
		metric("iqrf_polls_total", "counter", "Poll requests sent (per node, or per sensor FRC).", "", cm.Polls.Load())
		metric("iqrf_poll_errors_total", "counter", "Poll requests that failed.", "", cm.PollErrors.Load())
		metric("iqrf_timeouts_total", "counter", "DPA transactions without an answer after every retry.", "", cm.Link.Timeouts.Load())
		metric("iqrf_retries_total", "counter", "DPA requests sent again after a timeout.", "", cm.Link.Retries.Load())
		metric("iqrf_readings_total", "counter", "Sensor readings taken.", "", cm.Readings.Load())
		metric("iqrf_values_not_available_total", "counter", "Sensor values reported as not available (no reading).", "", cm.NoValue.Load())
		metric("iqrf_bad_frames_total", "counter", "Frames dropped by the link layer or the DPA decoder.", "", cm.Link.FrameErrors.Load())
		metric("iqrf_bad_payloads_total", "counter", "Responses whose sensor payload did not decode.", "", cm.BadPayloads.Load())
		metric("iqrf_stray_frames_total", "counter", "Answers that matched no pending request.", "", cm.Link.Stray.Load())
		metric("iqrf_coordinator_resets_total", "counter", "Reset messages from the coordinator.", "", cm.Link.Resets.Load())
		metric("iqrf_link_failures_total", "counter", "Failed opens and losses of the coordinator link.", "", cm.LinkFailures.Load())
		depth := []any{}
		for _, name := range []string{"graphite", "mqtt"} {
			if rd := q.Reader(name); rd != nil {
				depth = append(depth, fmt.Sprintf("{sink=%q}", name), rd.Pending())
			}
		}
		metric("iqrf_buffer_depth", "gauge", "Readings stored and not yet released to the sink.", depth...)
		metric("iqrf_buffer_bytes", "gauge", "Size of the store-and-forward queue on disk.", "", q.Bytes())
		metric("iqrf_buffer_dropped_total", "counter", "Readings dropped because the queue was full.", "", q.Dropped())
		metric("iqrf_sent_total", "counter", "Readings sent to the sink, resends included (Graphite: written, and the bytes acknowledged by carbon's TCP stack; MQTT: published).",
			`{sink="graphite"}`, g.Sent.Load(), `{sink="mqtt"}`, m.Sent.Load())
		metric("iqrf_acknowledged_total", "counter", "Readings the MQTT broker acknowledged (QoS 1 PUBACK), each once; they leave the queue.",
			`{sink="mqtt"}`, m.Acknowledged.Load())
		metric("iqrf_tcp_acknowledged_total", "counter", "Readings released to Graphite, each once: carbon's TCP stack acknowledged them and the connection stayed up for --graphite-confirm. Carbon's plaintext protocol has no acknowledgement: not proof of storage.",
			`{sink="graphite"}`, g.TCPAcknowledged.Load())
		metric("iqrf_sink_errors_total", "counter", "Failed connections and deliveries.",
			`{sink="graphite"}`, g.Errors.Load(), `{sink="mqtt"}`, m.Errors.Load())
		metric("iqrf_api_requests_total", "counter", "JSON API requests answered.", "", m.APIRequests.Load())
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Write([]byte(b.String()))
	})
}
