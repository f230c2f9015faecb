package console

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// Bounds of the Graphite proxy.
const (
	maxQueryLen    = 4096             // the query string the browser may send
	maxTargetLen   = 1024             // one target
	maxTargets     = 8                // targets in one request
	maxRenderBytes = 8 << 20          // the answer passed back
	renderTimeout  = 10 * time.Second // one render
)

// renderParams are the render API's parameters passed on; anything else is refused.
var renderParams = map[string]bool{
	"target": true, "from": true, "until": true, "format": true, "maxDataPoints": true,
	"width": true, "height": true, "title": true, "noCache": true,
}

// renderFormats are the formats passed on (not pickle, which Python unpickles).
var renderFormats = map[string]bool{"json": true, "png": true, "svg": true, "csv": true}

// graphite passes GET /ui/graphite/render?... to console.graphite_url's
// /render, bounded in what it asks and in what it returns.
func (h *Handler) graphite(w http.ResponseWriter, r *http.Request) {
	if h.cfg.GraphiteURL == "" {
		writeError(w, status.Error(codes.FailedPrecondition, "console.graphite_url is not set: no sensor data"))
		return
	}
	ctx, err := h.opts.Authorize(r, methodListGateways)
	if err != nil {
		writeError(w, err)
		return
	}
	q, err := renderQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, status.Error(codes.InvalidArgument, err.Error()))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, renderTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(h.cfg.GraphiteURL, "/")+"/render?"+q.Encode(), nil)
	if err != nil {
		writeError(w, status.Error(codes.Internal, err.Error()))
		return
	}
	resp, err := h.opts.Client.Do(req)
	if err != nil {
		h.opts.Logger.Warn("graphite render failed", logkey.Err, err)
		writeError(w, status.Error(codes.Unavailable, "graphite: "+err.Error()))
		return
	}
	defer resp.Body.Close()
	if resp.ContentLength > maxRenderBytes {
		writeError(w, status.Errorf(codes.ResourceExhausted, "graphite answer of %d bytes is larger than %d", resp.ContentLength, maxRenderBytes))
		return
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		writeError(w, status.Errorf(codes.Unavailable, "graphite answered %s: %s", resp.Status, strings.TrimSpace(string(msg))))
		return
	}
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/json"), strings.HasPrefix(ct, "image/png"), strings.HasPrefix(ct, "image/svg+xml"), strings.HasPrefix(ct, "text/csv"):
	default:
		writeError(w, status.Errorf(codes.Unavailable, "graphite answered with content type %q", ct))
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-store")
	if strings.HasPrefix(ct, "image/svg+xml") {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, maxRenderBytes+1))
	if err == nil && n > maxRenderBytes {
		h.opts.Logger.Warn("graphite answer cut", logkey.Count, n)
	}
}

// renderQuery checks the browser's query and returns what to send Graphite.
func renderQuery(raw string) (url.Values, error) {
	if len(raw) > maxQueryLen {
		return nil, fmt.Errorf("query of %d bytes: at most %d", len(raw), maxQueryLen)
	}
	in, err := url.ParseQuery(raw)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	out := url.Values{}
	for k, vs := range in {
		if !renderParams[k] {
			return nil, fmt.Errorf("parameter %q is not passed to graphite (only target, from, until, format, maxDataPoints, width, height, title, noCache)", k)
		}
		if k != "target" && len(vs) > 1 {
			return nil, fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
		out[k] = vs
	}
	ts := out["target"]
	if len(ts) == 0 || len(ts) > maxTargets {
		return nil, fmt.Errorf("want 1 to %d targets, got %d", maxTargets, len(ts))
	}
	for _, t := range ts {
		if t == "" || len(t) > maxTargetLen {
			return nil, fmt.Errorf("target of %d characters: want 1 to %d", len(t), maxTargetLen)
		}
	}
	if f := out.Get("format"); f == "" {
		out.Set("format", "json")
	} else if !renderFormats[f] {
		return nil, fmt.Errorf("format %q: want json, png, svg or csv", f)
	}
	return out, nil
}
