package rest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// testCA issues certificates with the validity a test needs (expired ones
// too), as the controller's enrollment CA would.
type testCA struct {
	t      *testing.T
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	dir    string
	serial int64
}

func newTestCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, cert: cert, key: key, dir: t.TempDir(), serial: 1}
	ca.write("ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, typ string, der []byte) string {
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// issue returns a certificate for id valid until notAfter.
func (ca *testCA) issue(id tlsconfig.Identity, notAfter time.Time) (tls.Certificate, *x509.Certificate) {
	ca.serial++
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial), Subject: id.Subject(),
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

// serverFiles writes the server's certificate and key.
func (ca *testCA) serverFiles() tlsconfig.Files {
	c, _ := ca.issue(tlsconfig.Identity{Name: "controller"}, time.Now().Add(24*time.Hour))
	kder, _ := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	return tlsconfig.Files{Cert: ca.write("server.pem", "CERTIFICATE", c.Certificate[0]), Key: ca.write("server-key.pem", "EC PRIVATE KEY", kder),
		CA: filepath.Join(ca.dir, "ca.pem")}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// revoked is a revocation set of fixed serials.
type revoked map[string]bool

func (r revoked) Revoked(s *big.Int) bool { return r[s.String()] }
func (r revoked) Watch(*big.Int) (<-chan struct{}, func()) {
	return make(chan struct{}), func() {}
}

// A revoked certificate and an expired one (within the renewal grace, so
// that the handshake completes, as the controller's listeners do with
// enrollment) are refused on every path with 403 and the JSON error of the
// Authorizer: the same code and message a gRPC call with the certificate
// gets on an open connection (the controller's gRPC listener refuses a
// revoked one at the handshake already). One expired beyond the grace fails
// the handshake, as on gRPC.
func TestRevokedAndExpiredCertificates(t *testing.T) {
	ca := newTestCA(t)
	files := ca.serverFiles()
	const grace = 2 * time.Hour
	admin := tlsconfig.Identity{Role: tlsconfig.RoleAdmin, Name: "alice"}
	good, _ := ca.issue(admin, time.Now().Add(time.Hour))
	bad, badLeaf := ca.issue(admin, time.Now().Add(time.Hour))
	expired, _ := ca.issue(admin, time.Now().Add(-time.Hour))
	longExpired, _ := ca.issue(admin, time.Now().Add(-grace-time.Hour))
	authz := &api.Authorizer{PeerVerified: true, Revocations: revoked{badLeaf.SerialNumber.String(): true}}
	h, f := newTestHandler(t, func(o *Options) {
		o.Authorizer = authz
		o.Anonymous = tlsconfig.Identity{}
	})
	tc, err := tlsconfig.ServerWith(files, tlsconfig.Verify{Anonymous: true, Grace: grace})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = tc
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)

	// The gRPC API with the same Authorizer and TLS verification.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)), grpc.ChainUnaryInterceptor(authz.Unary), grpc.ChainStreamInterceptor(authz.Stream))
	v1.RegisterNetworkServiceServer(gs, f)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	client := func(c tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS13}}}
	}
	grpcCall := func(c tls.Certificate) error {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{c}, ServerName: "localhost", MinVersion: tls.VersionTLS13})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "n1"}})
		return err
	}
	request := func(c *http.Client, method, path string) (*http.Response, []byte, error) {
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader(`{"network": {"name": "n1"}}`)
		}
		req, _ := http.NewRequest(method, srv.URL+path, body)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b, nil
	}

	// A valid certificate: served.
	if resp, b, err := request(client(good), http.MethodPost, "/v1/networks"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("valid certificate: %v %v %s", resp, err, b)
	}
	if err := grpcCall(good); err != nil {
		t.Fatalf("valid certificate over gRPC: %v", err)
	}

	for _, c := range []struct {
		name string
		cert tls.Certificate
		want string
	}{
		{"revoked", bad, "is revoked"},
		{"expired", expired, "expired at"},
	} {
		gerr := grpcCall(c.cert)
		if status.Code(gerr) != codes.PermissionDenied || !strings.Contains(gerr.Error(), c.want) {
			t.Fatalf("%s certificate over gRPC: %v", c.name, gerr)
		}
		for _, p := range []struct{ method, path string }{
			{http.MethodPost, "/v1/networks"}, {http.MethodGet, "/v1/networks:watch"}, {http.MethodGet, "/openapi.json"}, {http.MethodGet, "/ui/"},
		} {
			resp, b, err := request(client(c.cert), p.method, p.path)
			if err != nil {
				t.Fatalf("%s certificate, %s %s: %v", c.name, p.method, p.path, err)
			}
			var e Error
			if jerr := json.Unmarshal(b, &e); jerr != nil || resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != "application/json" ||
				e.Code != codes.PermissionDenied || e.CodeName != "PERMISSION_DENIED" || !strings.Contains(e.Message, c.want) || !strings.Contains(e.Message, admin.String()) {
				t.Errorf("%s certificate, %s %s: HTTP %d %s %s (%v)", c.name, p.method, p.path, resp.StatusCode, resp.Header.Get("Content-Type"), b, jerr)
			}
			if p.path == "/v1/networks" && e.Message != status.Convert(gerr).Message() {
				t.Errorf("%s certificate: REST says %q, gRPC %q", c.name, e.Message, status.Convert(gerr).Message())
			}
		}
	}

	// Expired beyond the renewal grace: no handshake, on either API.
	if _, _, err := request(client(longExpired), http.MethodGet, "/openapi.json"); err == nil {
		t.Error("a certificate expired beyond the grace was served")
	}
	if err := grpcCall(longExpired); status.Code(err) != codes.Unavailable {
		t.Errorf("a certificate expired beyond the grace over gRPC: %v", err)
	}
}
