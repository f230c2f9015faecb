// Package enrollclient is the client side of enrollment (pkg/enroll, the
// controller's EnrollmentService): it generates a key where it will be used
// (an ECDSA P-256 key, written 0600 and never sent), joins with a bootstrap
// token over TLS verified by the controller CA's fingerprint, keeps the
// certificate, key and CA in a directory, and renews the certificate over
// its own identity before it expires, with no restart (Renewer). The
// vrouter agent (--join) and iotfabricctl login use it.
package enrollclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/iotfabric/iotfabric/internal/atomicfile"
	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Files of an enrolled identity in its directory.
const (
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
	CAFile   = "ca.pem"
)

// Paths are the files of an identity kept in dir.
func Paths(dir string) tlsconfig.Files {
	return tlsconfig.Files{Cert: filepath.Join(dir, CertFile), Key: filepath.Join(dir, KeyFile), CA: filepath.Join(dir, CAFile)}
}

// Enrolled reports whether dir holds an identity.
func Enrolled(dir string) bool {
	_, err := os.Stat(Paths(dir).Cert)
	return err == nil
}

// Identity is an enrolled identity: its key, certificate and the CAs it
// trusts (the one that signed it; during a CA rotation, the new one too).
type Identity struct {
	Key  *ecdsa.PrivateKey
	Cert *x509.Certificate
	CAs  []*x509.Certificate
}

// TLS is the certificate for a tls.Config.
func (id Identity) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
}

// Name is the identity its certificate carries.
func (id Identity) Name() tlsconfig.Identity { return tlsconfig.IdentityOf(id.Cert) }

// NewKey generates the key of a new identity.
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// CSR is a certificate signing request for key (the controller sets the
// subject itself).
func CSR(key *ecdsa.PrivateKey) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
}

// Join enrolls at the controller addr with token: it generates a key, sends
// a CSR over TLS trusted by the CA fingerprint (and no client certificate),
// and returns the identity the controller issued. Nothing is written.
func Join(ctx context.Context, addr, token, fingerprint string) (Identity, error) {
	fp, err := enroll.ParseFingerprint(fingerprint)
	if err != nil {
		return Identity{}, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return Identity{}, fmt.Errorf("controller %q: want HOST:PORT", addr)
	}
	var pinned *x509.Certificate
	tc := tlsconfig.Pinned(fp, host, func(ca *x509.Certificate) { pinned = ca })
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return Identity{}, err
	}
	defer conn.Close()
	key, err := NewKey()
	if err != nil {
		return Identity{}, err
	}
	csr, err := CSR(key)
	if err != nil {
		return Identity{}, err
	}
	resp, err := v1.NewEnrollmentServiceClient(conn).Join(ctx, &v1.JoinRequest{Token: token, Csr: csr})
	if err != nil {
		return Identity{}, fmt.Errorf("join %s: %w", addr, err)
	}
	if pinned == nil {
		return Identity{}, errors.New("no CA to check the issued certificate against")
	}
	return identityFrom(resp, key, []*x509.Certificate{pinned})
}

// identityFrom checks what the controller answered: a certificate for key,
// signed by one of the CAs the connection trusted.
func identityFrom(resp *v1.CertificateResponse, key *ecdsa.PrivateKey, cas []*x509.Certificate) (Identity, error) {
	cert, err := x509.ParseCertificate(resp.GetCertificate())
	if err != nil {
		return Identity{}, fmt.Errorf("issued certificate: %w", err)
	}
	signed := false
	for _, ca := range cas {
		if cert.CheckSignatureFrom(ca) == nil {
			signed = true
		}
	}
	if !signed {
		return Identity{}, errors.New("issued certificate is not signed by a trusted CA")
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return Identity{}, errors.New("issued certificate is not for this key")
	}
	return Identity{Key: key, Cert: cert, CAs: cas}, nil
}

// Save writes the identity to dir (created 0700): the key 0600, each file
// replaced atomically, the certificate last.
func (id Identity) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(id.Key)
	if err != nil {
		return err
	}
	p := Paths(dir)
	var cas []byte
	for _, ca := range id.CAs {
		cas = append(cas, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})...)
	}
	for _, f := range []struct {
		path string
		data []byte
	}{
		{p.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})},
		{p.CA, cas},
		{p.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw})},
	} {
		if err := atomicfile.Write(f.path, f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Load reads the identity kept in dir.
func Load(dir string) (Identity, error) {
	p := Paths(dir)
	pair, err := tls.LoadX509KeyPair(p.Cert, p.Key)
	if err != nil {
		return Identity{}, fmt.Errorf("enrolled identity in %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return Identity{}, fmt.Errorf("enrolled identity in %s: not an ECDSA key", dir)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return Identity{}, err
	}
	capem, err := os.ReadFile(p.CA)
	if err != nil {
		return Identity{}, fmt.Errorf("enrolled identity in %s: %w", dir, err)
	}
	var cas []*x509.Certificate
	for b, rest := pem.Decode(capem); b != nil; b, rest = pem.Decode(rest) {
		ca, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return Identity{}, fmt.Errorf("%s: %w", p.CA, err)
		}
		cas = append(cas, ca)
	}
	if len(cas) == 0 {
		return Identity{}, fmt.Errorf("%s holds no PEM certificate", p.CA)
	}
	return Identity{Key: key, Cert: cert, CAs: cas}, nil
}

// RenewAt is when a certificate is renewed: at two thirds of its lifetime.
func RenewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// LoadCertificate reads the first certificate of a PEM file.
func LoadCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return x509.ParseCertificate(b.Bytes)
}
