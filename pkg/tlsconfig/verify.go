package tlsconfig

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Verify relaxes and extends the server's check of client certificates.
type Verify struct {
	// Anonymous lets a client without a certificate complete the handshake
	// (it may only join with a bootstrap token: the API's authorization
	// gives it no role).
	Anonymous bool
	// Grace lets a certificate that expired less than this ago pass the
	// handshake (the API's authorization then lets it renew only).
	Grace time.Duration
	// Revoked, when set, refuses the certificates it reports.
	Revoked func(serial *big.Int) bool
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// ServerWith returns a server configuration that verifies client
// certificates itself, against f.CA, with v's relaxations: the handshake
// completes without a certificate (v.Anonymous) or with one expired within
// v.Grace, and never with a revoked one. Go's crypto/tls then leaves
// ConnectionState.VerifiedChains empty: PeerCertificates holds the verified
// certificate (pkg/api's Authorizer reads it there when told so).
//
// Sessions resume with TLS 1.3 tickets (1 round trip, no signature); a
// resumed session's certificate is checked again for expiry and revocation.
func ServerWith(f Files, v Verify) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	now := v.Now
	if now == nil {
		now = time.Now
	}
	auth := tls.RequireAnyClientCert
	if v.Anonymous {
		auth = tls.RequestClientCert
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientAuth: auth, MinVersion: tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				if v.Anonymous {
					return nil
				}
				return errors.New("tls: client certificate required")
			}
			return verifyClient(cs, pool, v, now())
		},
	}, nil
}

func verifyClient(cs tls.ConnectionState, pool *x509.CertPool, v Verify, now time.Time) error {
	leaf := cs.PeerCertificates[0]
	if now.After(leaf.NotAfter.Add(v.Grace)) {
		return fmt.Errorf("tls: client certificate %s expired at %s", leaf.Subject, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if !cs.DidResume { // a resumed session's chain was verified when it was made
		opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(), CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if now.After(leaf.NotAfter) {
			opts.CurrentTime = leaf.NotAfter // within the grace: check it as of its last valid second
		}
		if _, err := leaf.Verify(opts); err != nil {
			return fmt.Errorf("tls: client certificate: %w", err)
		}
	}
	if v.Revoked != nil && v.Revoked(leaf.SerialNumber) {
		return fmt.Errorf("tls: client certificate %s (serial %s) is revoked", leaf.Subject, leaf.SerialNumber.Text(16))
	}
	return nil
}

// Pinned returns a client configuration for enrollment: no client
// certificate, and the server trusted when its chain holds the CA whose
// SHA-256 fingerprint is fp and its certificate verifies against that CA for
// serverName (the host of the address dialled). The CA found is passed to
// found.
func Pinned(fp []byte, serverName string, found func(ca *x509.Certificate)) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below, against the pinned CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var ca *x509.Certificate
			inter := x509.NewCertPool()
			certs := make([]*x509.Certificate, 0, len(raw))
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return fmt.Errorf("controller certificate: %w", err)
				}
				certs = append(certs, c)
				sum := sha256.Sum256(r)
				if subtle.ConstantTimeCompare(sum[:], fp) == 1 {
					ca = c
				} else {
					inter.AddCert(c)
				}
			}
			if ca == nil {
				return errors.New("the controller's certificate chain holds no CA with the given fingerprint (wrong --ca-fingerprint, or another controller)")
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: serverName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			if ip := net.ParseIP(serverName); ip != nil || serverName == "" {
				opts.DNSName = ""
			}
			if _, err := certs[0].Verify(opts); err != nil {
				return fmt.Errorf("controller certificate against the pinned CA: %w", err)
			}
			if ip := net.ParseIP(serverName); ip != nil {
				if err := certs[0].VerifyHostname(serverName); err != nil {
					return fmt.Errorf("controller certificate: %w", err)
				}
			}
			if found != nil {
				found(ca)
			}
			return nil
		},
	}
}
