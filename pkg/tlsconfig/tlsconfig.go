// Package tlsconfig builds the mutual-TLS configurations of the controller's
// API and of its clients (agents, iotfabricctl) from PEM files, reads the
// identity a client certificate encodes (identity.go), and serves
// enrollment: the server's own verification of client certificates (none,
// expired within a renewal grace, revoked: ServerWith), a client trusting a
// CA pinned by its fingerprint (Pinned) and a client certificate replaced
// atomically when renewed (CertHolder).
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files names the PEM files of one side.
type Files struct {
	Cert string `yaml:"cert"` // this side's certificate (chain)
	Key  string `yaml:"key"`  // its private key
	CA   string `yaml:"ca"`   // the CA that signs the other side's certificates
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

func (f Files) load() (tls.Certificate, *x509.CertPool, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return tls.Certificate{}, nil, errors.New("TLS needs all three files: cert, key and ca")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("%s holds no PEM certificate", f.CA)
	}
	return cert, pool, nil
}

// Server returns a configuration that requires a client certificate signed by f.CA.
func Server(f Files) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}, nil
}

// Client returns a configuration that presents f.Cert and trusts servers signed by f.CA.
func Client(f Files) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}, nil
}
