package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
)

func testCA(t *testing.T) *CA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * 365 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return NewCA(cert, key)
}

func newEnroller(t *testing.T, now func() time.Time) *Enroller {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(st, Config{CA: testCA(t), Now: now})
}

func csr(t *testing.T, subject pkix.Name, curve elliptic.Curve) []byte {
	key, _ := ecdsa.GenerateKey(curve, rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// The subject comes from the token, whatever the CSR asks; a bad CSR does
// not use the token up; the store keeps no secret.
func TestJoinSubjectFromToken(t *testing.T) {
	e := newEnroller(t, nil)
	ctx := context.Background()
	tok, info, err := e.CreateToken(ctx, KindGateway, "gw-7", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if info.Expires.Sub(info.Created) != DefaultTokenTTL {
		t.Errorf("default ttl %v", info.Expires.Sub(info.Created))
	}
	kv, err := e.st.Get(ctx, keys.Token(info.ID))
	if err != nil || strings.Contains(string(kv.Value), tok[strings.LastIndexByte(tok, '.')+1:]) {
		t.Fatalf("token record %q %v", kv.Value, err)
	}
	if _, err := e.Join(ctx, tok, csr(t, pkix.Name{}, elliptic.P384())); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("P-384 CSR: %v", err)
	}
	if _, err := e.Join(ctx, tok, []byte("junk")); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("junk CSR: %v", err)
	}
	evil := pkix.Name{CommonName: "mallory", Organization: []string{tlsconfig.OrgAdmins}}
	is, err := e.Join(ctx, tok, csr(t, evil, elliptic.P256()))
	if err != nil {
		t.Fatalf("join after refused CSRs: %v", err)
	}
	if got := tlsconfig.IdentityOf(is.Cert); got.String() != "gateway:gw-7" {
		t.Fatalf("a CSR asking for admin got %s", got)
	}
	if is.Cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(is.Cert.ExtKeyUsage) != 1 {
		t.Errorf("key usages %v", is.Cert.ExtKeyUsage)
	}
	if _, err := e.st.Get(ctx, keys.Cert("gateway:gw-7", Serial(is.Cert.SerialNumber))); err != nil {
		t.Errorf("issued serial not recorded: %v", err)
	}
	if _, err := e.Join(ctx, tok, csr(t, pkix.Name{}, elliptic.P256())); !errors.Is(err, model.ErrUnauthenticated) {
		t.Fatalf("token used twice: %v", err)
	}
}

func TestCreateTokenChecks(t *testing.T) {
	e := newEnroller(t, nil)
	ctx := context.Background()
	for _, c := range []struct {
		kind       Kind
		name, role string
		ttl        time.Duration
	}{
		{KindGateway, "gw/1", "", 0}, {KindGateway, "", "", 0}, {KindGateway, "gw", "admin", 0},
		{KindUser, "alice", "root", 0}, {KindUser, "alice", "", 0}, {"robot", "r", "", 0}, {KindGateway, "gw", "", -time.Second},
	} {
		if _, _, err := e.CreateToken(ctx, c.kind, c.name, c.role, c.ttl); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%+v: %v", c, err)
		}
	}
	tok, _, err := e.CreateToken(ctx, KindUser, "alice", "viewer", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	is, err := e.Join(ctx, tok, csr(t, pkix.Name{}, elliptic.P256()))
	if err != nil || is.Identity.String() != "viewer:alice" {
		t.Fatalf("user token: %v %v", is.Identity, err)
	}
}

// Expiry is the controller's clock against the token's; renewal within and
// beyond the grace; a renewal of a revoked serial fails even if it races.
func TestExpiryRenewRevoke(t *testing.T) {
	now := time.Now()
	e := newEnroller(t, func() time.Time { return now })
	ctx := context.Background()
	tok, _, _ := e.CreateToken(ctx, KindGateway, "gw-1", "", time.Hour)
	now = now.Add(time.Hour)
	if _, err := e.Join(ctx, tok, csr(t, pkix.Name{}, elliptic.P256())); !errors.Is(err, model.ErrUnauthenticated) {
		t.Fatalf("expired token: %v", err)
	}
	tok, _, _ = e.CreateToken(ctx, KindGateway, "gw-1", "", time.Hour)
	is, err := e.Join(ctx, tok, csr(t, pkix.Name{}, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	now = is.Cert.NotAfter.Add(DefaultGrace - time.Minute)
	r, err := e.Renew(ctx, is.Cert, csr(t, pkix.Name{}, elliptic.P256()))
	if err != nil || r.Identity.String() != "gateway:gw-1" {
		t.Fatalf("renew within the grace: %v %v", r.Identity, err)
	}
	now = is.Cert.NotAfter.Add(DefaultGrace + time.Minute)
	if _, err := e.Renew(ctx, is.Cert, csr(t, pkix.Name{}, elliptic.P256())); !errors.Is(err, model.ErrUnauthenticated) {
		t.Fatalf("renew beyond the grace: %v", err)
	}
	now = r.Cert.NotBefore.Add(time.Hour)
	serials, err := e.Revoke(ctx, "gateway:gw-1")
	if err != nil || len(serials) != 2 {
		t.Fatalf("revoke: %v %v", serials, err)
	}
	if _, err := e.Renew(ctx, r.Cert, csr(t, pkix.Name{}, elliptic.P256())); !errors.Is(err, model.ErrUnauthenticated) {
		t.Fatalf("renew of a revoked certificate: %v", err)
	}
	list, err := e.ListRevoked(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("revoked: %v %v", list, err)
	}
	if again, err := e.Revoke(ctx, "gateway:gw-1"); err != nil || len(again) != 0 {
		t.Fatalf("second revoke: %v %v", again, err)
	}
}

func TestRevocationsSet(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, follow := range []bool{false, true} {
		r := NewRevocations(st, follow, nil)
		go r.Run(ctx)
		<-r.Ready()
		s := big.NewInt(int64(1000 + btoi(follow)))
		done, stop := r.Watch(s)
		if follow {
			// Another controller's revocation, seen through the store.
			if _, err := st.Txn(ctx, nil, putRevoked(Serial(s))); err != nil {
				t.Fatal(err)
			}
		} else {
			r.Add(Serial(s))
		}
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatalf("follow=%t: watch not woken", follow)
		}
		stop()
		if !r.Revoked(s) || r.Revoked(big.NewInt(7)) {
			t.Fatalf("follow=%t: set wrong", follow)
		}
		if d, _ := r.Watch(s); !closed(d) {
			t.Fatal("watch of a revoked serial is not closed at once")
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("iof1.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("iof1..")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, ok := parseToken(s)
		if ok && (len(id) != 16 || len(secret) != 32) {
			t.Fatalf("%q parsed to %q, %d bytes", s, id, len(secret))
		}
	})
}

func FuzzParseFingerprint(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("ab", 32))
	f.Add(strings.Repeat("AB:", 31) + "AB")
	f.Fuzz(func(t *testing.T, s string) {
		if b, err := ParseFingerprint(s); err == nil && len(b) != 32 {
			t.Fatalf("%q: %d bytes", s, len(b))
		}
	})
}

func putRevoked(serial string) []store.Op {
	return []store.Op{store.Put(keys.RevokedCert(serial), []byte(`{"identity":"gateway:x"}`))}
}
