// Package enroll is the controller's enrollment authority: one-time bootstrap
// tokens bound to a gateway (or an operator), certificates signed by the
// controller's CA for the holders of those tokens and renewed over their own
// identity, the record of every certificate issued, and their revocation
// (docs/security.md).
//
// It owns the store keys under keys.Tokens, keys.Certs and keys.Revoked.
// It is domain code: its errors are model kinds, mapped to gRPC codes by
// pkg/api; it never sees the transport. Revocations keeps the set of revoked
// serials current from a store watch, so that every controller sharing the
// store refuses them.
package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
)

// CA signs client certificates: the controller's CA certificate and its key.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// LoadCA reads a CA certificate and its private key (PEM files).
func LoadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA %s and key %s: %w", certPath, keyPath, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("CA %s: the certificate is not a CA (basic constraints)", certPath)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key %s cannot sign", keyPath)
	}
	return &CA{cert: cert, key: key}, nil
}

// NewCA is a CA from a certificate and its key (tests, tools).
func NewCA(cert *x509.Certificate, key crypto.Signer) *CA { return &CA{cert: cert, key: key} }

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Fingerprint is the SHA-256 of a certificate (DER), as sha256:<hex>: what
// an agent's --ca-fingerprint pins.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseFingerprint reads a SHA-256 fingerprint: sha256:<hex>, or the 64 hex
// digits alone, with or without colons (as openssl x509 -fingerprint prints
// it).
func ParseFingerprint(s string) ([]byte, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "sha256:"), "SHA256:")
	h = strings.ReplaceAll(h, ":", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("CA fingerprint %q: want sha256:<64 hex digits>", s)
	}
	return b, nil
}

// Serial is a certificate serial as the store keys and the CLI spell it
// (lower-case hex).
func Serial(n *big.Int) string { return n.Text(16) }

// sign issues a client certificate for id to the key of csr, valid from now
// for lifetime (not beyond the CA's own expiry).
func (ca *CA) sign(csr *x509.CertificateRequest, id tlsconfig.Identity, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	serial.Add(serial, big.NewInt(1)) // never 0
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      id.Subject(),
		// A little back (a minute, a tenth of a short lifetime), for
		// clients whose clocks run a little behind.
		NotBefore:   now.Add(-min(time.Minute, lifetime/10)),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return x509.ParseCertificate(der)
}

// parseCSR reads and checks a certificate signing request: its signature,
// and an ECDSA P-256 key. Its subject is ignored.
func parseCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, model.Errorf(model.ErrInvalid, "certificate signing request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, model.Errorf(model.ErrInvalid, "certificate signing request: %w", err)
	}
	if k, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		return nil, model.Errorf(model.ErrInvalid, "certificate signing request: want an ECDSA P-256 key")
	}
	return csr, nil
}
