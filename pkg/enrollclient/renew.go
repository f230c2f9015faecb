package enrollclient

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Renewer keeps an enrolled identity's certificate current: at two thirds
// of its lifetime it asks a controller for a new one over its own identity
// (also after the certificate expired, within the controller's renewal
// grace), saves it and hands it to new connections at once (Credentials),
// with no restart.
type Renewer struct {
	dir         string
	controllers []string
	log         *slog.Logger
	holder      *tlsconfig.CertHolder
	roots       *x509.CertPool
	// OnRenew, if set, is called after each renewal (tests).
	OnRenew func(Identity)

	mu    sync.Mutex
	id    Identity
	conns map[*expiringConn]struct{} // open connections, with the certificate they present
}

// NewRenewer renews id with controllers (tried in turn), saving each new
// certificate to dir ("" : nowhere).
func NewRenewer(id Identity, dir string, controllers []string, log *slog.Logger) (*Renewer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := tlsconfig.NewCertHolder(id.TLS())
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, ca := range id.CAs {
		roots.AddCert(ca)
	}
	return &Renewer{dir: dir, controllers: controllers, log: log, holder: h, roots: roots, id: id, conns: map[*expiringConn]struct{}{}}, nil
}

// Identity is the identity held now.
func (r *Renewer) Identity() Identity {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.id
}

// Credentials are the gRPC transport credentials of the identity: each new
// connection presents the certificate held at the time; a connection is
// closed when the certificate it presented expires (gRPC then reconnects
// with the current one), and after a renewal of an expired certificate.
func (r *Renewer) Credentials() credentials.TransportCredentials {
	return &expiringCreds{TransportCredentials: credentials.NewTLS(r.holder.ClientConfig(r.roots)), r: r}
}

// Run renews until ctx ends.
func (r *Renewer) Run(ctx context.Context) error {
	fails := 0
	for {
		cert := r.Identity().Cert
		wait := time.Until(RenewAt(cert))
		if fails > 0 {
			// Retry sooner than the next renewal time: every tenth of the
			// remaining lifetime, between 1 s and 5 min.
			wait = min(max(time.Until(cert.NotAfter)/10, time.Second), 5*time.Minute)
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := r.RenewNow(ctx); err != nil {
			fails++
			r.log.Warn("certificate renewal failed; retrying", logkey.Err, err, logkey.NotAfter, cert.NotAfter, logkey.Attempt, fails)
			continue
		}
		fails = 0
	}
}

// RenewNow renews the certificate now.
func (r *Renewer) RenewNow(ctx context.Context) error {
	cur := r.Identity()
	csr, err := CSR(cur.Key)
	if err != nil {
		return err
	}
	var errs []error
	for _, addr := range r.controllers {
		id, err := r.renewAt(ctx, addr, cur, csr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r.dir != "" {
			if err := id.Save(r.dir); err != nil {
				return fmt.Errorf("save renewed certificate: %w", err)
			}
		}
		if err := r.holder.Set(id.TLS()); err != nil {
			return err
		}
		r.mu.Lock()
		r.id = id
		r.mu.Unlock()
		r.log.Info("certificate renewed", logkey.Identity, id.Name().String(), logkey.Serial, id.Cert.SerialNumber.Text(16), logkey.NotAfter, id.Cert.NotAfter)
		r.closeExpired()
		if r.OnRenew != nil {
			r.OnRenew(id)
		}
		return nil
	}
	if len(errs) == 0 {
		return errors.New("no controller to renew with")
	}
	return errors.Join(errs...)
}

func (r *Renewer) renewAt(ctx context.Context, addr string, cur Identity, csr []byte) (Identity, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(r.Credentials()))
	if err != nil {
		return Identity{}, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := v1.NewEnrollmentServiceClient(conn).Renew(cctx, &v1.RenewRequest{Csr: csr})
	if err != nil {
		return Identity{}, fmt.Errorf("renew at %s: %w", addr, err)
	}
	return identityFrom(resp, cur.Key, cur.CAs)
}

// closeExpired closes the connections that present an expired certificate
// (made within the renewal grace: they may only renew).
func (r *Renewer) closeExpired() {
	now := time.Now()
	r.mu.Lock()
	var old []*expiringConn
	for c := range r.conns {
		if now.After(c.notAfter) {
			old = append(old, c)
		}
	}
	r.mu.Unlock()
	for _, c := range old {
		c.Close()
	}
}

type expiringCreds struct {
	credentials.TransportCredentials
	r *Renewer
}

func (e *expiringCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cur := e.r.holder.Current()
	conn, ai, err := e.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	c := &expiringConn{Conn: conn, notAfter: cur.Leaf.NotAfter, r: e.r}
	if d := time.Until(cur.Leaf.NotAfter); d > 0 {
		c.timer = time.AfterFunc(d, func() { c.Close() })
	}
	e.r.mu.Lock()
	e.r.conns[c] = struct{}{}
	e.r.mu.Unlock()
	return c, ai, nil
}

func (e *expiringCreds) Clone() credentials.TransportCredentials {
	return &expiringCreds{TransportCredentials: e.TransportCredentials.Clone(), r: e.r}
}

// expiringConn is a connection that closes when the certificate it
// presented expires.
type expiringConn struct {
	net.Conn
	notAfter time.Time
	timer    *time.Timer
	r        *Renewer
	once     sync.Once
}

func (c *expiringConn) Close() error {
	c.once.Do(func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		c.r.mu.Lock()
		delete(c.r.conns, c)
		c.r.mu.Unlock()
	})
	return c.Conn.Close()
}
