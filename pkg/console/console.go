// Package console is the controller's web console: a few static pages
// (HTML, CSS and hand-written JavaScript, embedded in the binary with no
// network access at run time) served at /ui/ on the REST listener, that read
// the REST API (/v1/...) and follow its watch streams (server-sent events) to
// stay current without reloading.
//
// Besides the static files it serves four small things of its own:
// /ui/config.json (what the pages need to know of the configuration),
// /ui/api/summary (counts the overview draws without downloading every
// endpoint), /ui/api/watch (the REST watches a page follows, as one stream:
// a browser opens at most six HTTP/1.1 connections to a server) and
// /ui/graphite/render (Graphite's render API through the controller, when
// console.graphite_url is set, so the browser needs no CORS). The summary
// and the proxy are authorized like the REST calls they stand for
// (Options.Authorize); the watches are the caller's own REST requests.
//
// It owns no state and no store key; it reads through Lister, the same list
// calls the API serves.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Prefix is the path the console is served under.
const Prefix = "/ui/"

// Defaults of Config.
const (
	DefaultSensorTargets = "iotfabric.*.node*.*"
	DefaultAlertAfter    = 5 * time.Minute
)

// Config is the controller configuration's console section.
type Config struct {
	// Enabled turns the console on or off; unset: on whenever the REST API
	// listens (api.http_listen).
	Enabled *bool `yaml:"enabled"`
	// GraphiteURL is the base URL of a graphite-web (e.g.
	// http://127.0.0.1:8080); the sensor page reads its render API through
	// the controller. Empty: no sensor charts.
	GraphiteURL string `yaml:"graphite_url"`
	// SensorTargets is the Graphite target the sensor page draws (default
	// iotfabric.*.node*.*: every IQRF node of every collector prefix).
	SensorTargets string `yaml:"sensor_targets"`
	// AlertAfter: a gateway down (or never seen) this long is an alert on
	// the overview (default 5m).
	AlertAfter time.Duration `yaml:"alert_after"`
}

// On reports whether the console is served, given whether the REST API listens.
func (c Config) On(restListens bool) bool {
	if c.Enabled != nil {
		return *c.Enabled && restListens
	}
	return restListens
}

// Validate names every problem of the section.
func (c Config) Validate() error {
	var errs []error
	if c.GraphiteURL != "" {
		u, err := url.Parse(c.GraphiteURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			errs = append(errs, fmt.Errorf("console.graphite_url %q: want the base URL of graphite-web such as http://127.0.0.1:8080", c.GraphiteURL))
		}
	}
	if c.AlertAfter < 0 {
		errs = append(errs, fmt.Errorf("console.alert_after %v: want a positive duration such as 5m", c.AlertAfter))
	}
	if len(c.SensorTargets) > maxTargetLen {
		errs = append(errs, fmt.Errorf("console.sensor_targets: longer than %d characters", maxTargetLen))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.SensorTargets == "" {
		c.SensorTargets = DefaultSensorTargets
	}
	if c.AlertAfter == 0 {
		c.AlertAfter = DefaultAlertAfter
	}
	return c
}

// Lister is what the summary reads: the API's list calls (the gRPC servers
// of pkg/api satisfy it).
type Lister interface {
	ListNetworks(context.Context, *v1.ListNetworksRequest) (*v1.ListNetworksResponse, error)
	ListGateways(context.Context, *v1.ListGatewaysRequest) (*v1.ListGatewaysResponse, error)
	ListEndpoints(context.Context, *v1.ListEndpointsRequest) (*v1.ListEndpointsResponse, error)
}

// PeerLister lists the BGP peers (nil in Options: the summary has none).
type PeerLister interface {
	ListPeers(context.Context, *v1.ListPeersRequest) (*v1.ListPeersResponse, error)
}

// Options are what the controller hands the console.
type Options struct {
	Lister Lister
	Peers  PeerLister
	// Authorize decides whether the caller of r may call the gRPC method
	// (full name, e.g. /iotfabric.v1.GatewayService/ListGateways), the
	// way the REST API decides; it returns the context to call with. The
	// summary needs the list methods, the Graphite proxy ListGateways.
	// Required.
	Authorize func(r *http.Request, method string) (context.Context, error)
	// Client reaches Graphite (nil: a client of its own).
	Client *http.Client
	Logger *slog.Logger
}

//go:embed static
var static embed.FS

// Handler serves the console under Prefix.
type Handler struct {
	cfg   Config
	opts  Options
	files http.Handler
	mux   *http.ServeMux
	api   atomic.Pointer[http.Handler] // the REST API (SetAPI)

	sumMu  sync.Mutex // one summary at a time
	sum    *Summary   // the store's counts at sumRev; guarded by sumMu
	sumRev int64
}

// New returns the console's handler, to mount at Prefix.
func New(cfg Config, opts Options) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Lister == nil || opts.Authorize == nil {
		return nil, errors.New("console: Options.Lister and Options.Authorize are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg.withDefaults(), opts: opts, files: http.StripPrefix(strings.TrimSuffix(Prefix, "/"), http.FileServerFS(sub)), mux: http.NewServeMux()}
	h.mux.HandleFunc("GET "+Prefix+"config.json", h.config)
	h.mux.HandleFunc("GET "+Prefix+"api/summary", h.summary)
	h.mux.HandleFunc("GET "+Prefix+"graphite/render", h.graphite)
	h.mux.HandleFunc("GET "+Prefix+"api/watch", h.watch)
	h.mux.HandleFunc("GET "+Prefix, h.static)
	return h, nil
}

// ServeHTTP serves the console with headers that keep the browser from
// running anything but the console's own script.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

// static serves the embedded files; every path that is not a file is the
// single page (the pages route by the URL's fragment).
func (h *Handler) static(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, Prefix)
	if name == "" || name == "index.html" || strings.Contains(name, "/") || !strings.Contains(name, ".") {
		r2 := r.Clone(r.Context())
		r2.URL.Path = Prefix
		w.Header().Set("Cache-Control", "no-cache")
		h.files.ServeHTTP(w, r2)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	h.files.ServeHTTP(w, r)
}

// config tells the pages what they need of the configuration.
func (h *Handler) config(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"graphite":          h.cfg.GraphiteURL != "",
		"sensorTargets":     h.cfg.SensorTargets,
		"alertAfterSeconds": int64(h.cfg.AlertAfter / time.Second),
		"apiPrefix":         "/v1",
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
