// Package tlstest writes a throwaway CA and certificates signed by it, for
// tests: without a role (Issue), or with the identities tlsconfig encodes
// (Admin, Viewer, Gateway).
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
)

// CA is a certificate authority whose files live in a test's temporary directory.
type CA struct {
	t    testing.TB
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	Path string // the CA certificate (PEM)
}

var serial atomic.Int64

func write(t testing.TB, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// NewCA makes a CA named name.
func NewCA(t testing.TB, name string) *CA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	dir := t.TempDir()
	ca := &CA{t: t, dir: dir, cert: cert, key: key, Path: filepath.Join(dir, "ca.pem")}
	write(t, ca.Path, "CERTIFICATE", der)
	return ca
}

// Issue writes a certificate for name with no role (client and server use;
// valid for 127.0.0.1 and localhost) and returns the files to use it with
// this CA. A controller's own certificate needs no role.
func (ca *CA) Issue(name string) tlsconfig.Files {
	return ca.IssueFor(name, pkix.Name{CommonName: name})
}

// Admin writes a certificate of the admin role (O=iotfabric:admins).
func (ca *CA) Admin(name string) tlsconfig.Files {
	return ca.IssueFor(name, tlsconfig.Identity{Role: tlsconfig.RoleAdmin, Name: name}.Subject())
}

// Viewer writes a certificate of the viewer role (O=iotfabric:viewers).
func (ca *CA) Viewer(name string) tlsconfig.Files {
	return ca.IssueFor(name, tlsconfig.Identity{Role: tlsconfig.RoleViewer, Name: name}.Subject())
}

// Gateway writes the certificate of the gateway gw's agent
// (O=iotfabric:gateways, CN=gateway:<gw>).
func (ca *CA) Gateway(gw string) tlsconfig.Files {
	return ca.IssueFor("gateway-"+gw, tlsconfig.Identity{Role: tlsconfig.RoleGateway, Gateway: gw}.Subject())
}

// IssueFor writes a certificate with subject into files named after file.
func (ca *CA) IssueFor(file string, subject pkix.Name) tlsconfig.Files {
	name := file
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	f := tlsconfig.Files{Cert: filepath.Join(ca.dir, name+".pem"), Key: filepath.Join(ca.dir, name+"-key.pem"), CA: ca.Path}
	write(ca.t, f.Cert, "CERTIFICATE", der)
	write(ca.t, f.Key, "EC PRIVATE KEY", kder)
	return f
}

// KeyFile writes the CA's private key (PEM) and returns its path, for a
// controller that signs with this CA (api.enrollment.ca_key).
func (ca *CA) KeyFile() string {
	kder, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	p := filepath.Join(ca.dir, "ca-key.pem")
	write(ca.t, p, "EC PRIVATE KEY", kder)
	return p
}
