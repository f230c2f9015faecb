package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync/atomic"
)

// CertHolder holds a client's current certificate, replaced atomically when
// it is renewed: connections made after Set present the new one, with no
// restart. Its sessions (TLS 1.3 tickets, for resumption) belong to the
// certificate they were made with, and are dropped by Set, so that a resumed
// connection never presents the old certificate.
type CertHolder struct {
	cert  atomic.Pointer[tls.Certificate]
	cache atomic.Pointer[tls.ClientSessionCache]
}

// NewCertHolder holds c (its Leaf is parsed if missing).
func NewCertHolder(c tls.Certificate) (*CertHolder, error) {
	h := &CertHolder{}
	return h, h.Set(c)
}

// Set replaces the certificate.
func (h *CertHolder) Set(c tls.Certificate) error {
	if len(c.Certificate) == 0 {
		return errors.New("no certificate")
	}
	if c.Leaf == nil {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return err
		}
		c.Leaf = leaf
	}
	cache := tls.NewLRUClientSessionCache(8)
	h.cache.Store(&cache)
	h.cert.Store(&c)
	return nil
}

// Current is the certificate held now.
func (h *CertHolder) Current() *tls.Certificate { return h.cert.Load() }

// ClientConfig is a client configuration that trusts servers signed by
// roots and presents the certificate held at each handshake.
func (h *CertHolder) ClientConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		RootCAs: roots, MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return h.cert.Load(), nil },
		ClientSessionCache:   holderCache{h},
	}
}

// holderCache is the session cache of the certificate held now.
type holderCache struct{ h *CertHolder }

func (c holderCache) Get(key string) (*tls.ClientSessionState, bool) {
	return (*c.h.cache.Load()).Get(key)
}
func (c holderCache) Put(key string, s *tls.ClientSessionState) { (*c.h.cache.Load()).Put(key, s) }
