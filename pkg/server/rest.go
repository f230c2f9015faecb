package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/rest"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
)

// restServer is the REST API's listener, server and handler (all nil when off).
type restServer struct {
	h    *rest.Handler
	srv  *http.Server
	lis  net.Listener
	addr string
}

// startREST binds api.http_listen and builds the REST handler over the
// API's services and Authorizer (ro); serve starts serving. With api.tls it
// serves HTTPS with the API's certificate and asks for (without requiring)
// a client certificate from the API's CA, verified as the gRPC API verifies
// them: a revoked one passes the handshake and every request with it is
// refused (403, the Authorizer's message, as JSON); with enrollment, one
// expired within the renewal grace passes it and may then only renew, which
// REST does not offer (403 too).
func startREST(cfg Config, opts Options, ro rest.Options, e *enroll.Enroller) (restServer, error) {
	anon, err := cfg.httpAnonymous()
	if err != nil {
		return restServer{}, err
	}
	var tc *tls.Config
	if cfg.API.TLS.Enabled() {
		v := tlsconfig.Verify{Anonymous: true}
		if e.CA() != nil {
			v.Grace = e.Grace()
		}
		if tc, err = tlsconfig.ServerWith(cfg.API.TLS, v); err != nil {
			return restServer{}, fmt.Errorf("api.tls for api.http_listen: %w", err)
		}
	}
	lis, err := net.Listen("tcp", cfg.API.HTTPListen)
	if err != nil {
		return restServer{}, fmt.Errorf("REST API listener: %w", err)
	}
	if tc == nil && !loopback(lis.Addr()) && (!cfg.API.Insecure || anon.Role == tlsconfig.RoleAdmin) {
		lis.Close()
		return restServer{}, fmt.Errorf("REST API listener %s: not a loopback address and api.tls is not set (api.http_anonymous admin needs loopback; else set api.insecure)", lis.Addr())
	}
	ro.Anonymous = anon
	h, err := rest.New(ro)
	if err != nil {
		lis.Close()
		return restServer{}, err
	}
	srv := &http.Server{Handler: h, TLSConfig: tc,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(ro.Logger.Handler(), slog.LevelWarn)}
	return restServer{h: h, srv: srv, lis: lis, addr: lis.Addr().String()}, nil
}

// serve serves the REST API (nothing when off).
func (r restServer) serve(log *slog.Logger) {
	if r.srv == nil {
		return
	}
	go func() {
		var err error
		if r.srv.TLSConfig != nil {
			err = r.srv.ServeTLS(r.lis, "", "")
		} else {
			err = r.srv.Serve(r.lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("REST API stopped serving", logkey.REST, r.addr, logkey.Err, err)
		}
	}()
}

// stop ends the watches, lets the requests in progress end (5 s at most)
// and stops the in-process gRPC server.
func (r restServer) stop() {
	if r.h == nil {
		return
	}
	r.h.EndStreams()
	if r.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := r.srv.Shutdown(ctx); err != nil {
			r.srv.Close()
		}
		cancel()
	}
	if r.lis != nil {
		r.lis.Close()
	}
	r.h.Close()
}
