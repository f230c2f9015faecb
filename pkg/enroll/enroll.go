package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
)

// Defaults.
const (
	// DefaultLifetime is how long an issued certificate is valid.
	DefaultLifetime = 30 * 24 * time.Hour
	// DefaultGrace is how long after its expiry a certificate may still
	// renew itself (a gateway offline that long).
	DefaultGrace = 30 * 24 * time.Hour
	// DefaultTokenTTL is how long a token may be used.
	DefaultTokenTTL = time.Hour
	// tokenPrefix starts every token (a version).
	tokenPrefix = "iof1."
)

// Kind is what a token enrolls.
type Kind string

const (
	KindGateway Kind = "gateway"
	KindUser    Kind = "user"
)

// Config is the enrollment authority's configuration.
type Config struct {
	// CA signs the certificates; nil means an external CA signs them and
	// Join and Renew are refused.
	CA *CA
	// Lifetime of issued certificates (0: DefaultLifetime).
	Lifetime time.Duration
	// Grace: a certificate expired for less than this may still renew
	// (0: DefaultGrace; negative: none).
	Grace time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Revocations, if set, learns this controller's revocations at once.
	Revocations *Revocations
	Logger      *slog.Logger
}

// Enroller issues tokens and certificates, and revokes them.
type Enroller struct {
	st  store.Store
	cfg Config
	log *slog.Logger
}

// New returns an Enroller over st.
func New(st store.Store, cfg Config) *Enroller {
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultGrace
	} else if cfg.Grace < 0 {
		cfg.Grace = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Enroller{st: st, cfg: cfg, log: log}
}

// CA is the signing CA (nil: external).
func (e *Enroller) CA() *CA { return e.cfg.CA }

// Grace is the renewal grace.
func (e *Enroller) Grace() time.Duration { return e.cfg.Grace }

// TokenInfo describes a token, without its secret.
type TokenInfo struct {
	ID      string    `json:"-"`
	Kind    Kind      `json:"kind"`
	Name    string    `json:"name"`
	Role    string    `json:"role,omitempty"` // KindUser: admin or viewer
	Hash    string    `json:"hash"`           // hex SHA-256 of the secret
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// Identity is the identity a token's certificate carries.
func (t TokenInfo) Identity() tlsconfig.Identity {
	if t.Kind == KindGateway {
		return tlsconfig.Identity{Role: tlsconfig.RoleGateway, Gateway: t.Name, Name: tlsconfig.GatewayPrefix + t.Name}
	}
	if t.Role == "admin" {
		return tlsconfig.Identity{Role: tlsconfig.RoleAdmin, Name: t.Name}
	}
	return tlsconfig.Identity{Role: tlsconfig.RoleViewer, Name: t.Name}
}

// Issued is a certificate the CA issued.
type Issued struct {
	Cert     *x509.Certificate
	CA       *x509.Certificate
	Identity tlsconfig.Identity
}

// certRecord is what the store keeps of an issued certificate.
type certRecord struct {
	Identity string    `json:"identity"`
	Issued   time.Time `json:"issued"`
	NotAfter time.Time `json:"not_after"`
	Via      string    `json:"via"` // join or renew
}

// RevokedInfo is a revoked certificate.
type RevokedInfo struct {
	Serial   string    `json:"-"`
	Identity string    `json:"identity"`
	Revoked  time.Time `json:"revoked"`
	NotAfter time.Time `json:"not_after"`
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// CreateToken makes a one-time token that enrolls kind name (role for a
// user: admin or viewer), usable for ttl (0: DefaultTokenTTL). The token is
// returned once; the store keeps its SHA-256 only.
func (e *Enroller) CreateToken(ctx context.Context, kind Kind, name, role string, ttl time.Duration) (string, TokenInfo, error) {
	switch kind {
	case KindGateway:
		if role != "" && role != "gateway" {
			return "", TokenInfo{}, model.Errorf(model.ErrInvalid, "a gateway token has no role (got %q)", role)
		}
		role = ""
	case KindUser:
		if role != "admin" && role != "viewer" {
			return "", TokenInfo{}, model.Errorf(model.ErrInvalid, "user role %q: want admin or viewer", role)
		}
	default:
		return "", TokenInfo{}, model.Errorf(model.ErrInvalid, "token kind %q: want gateway or user", kind)
	}
	if !validName.MatchString(name) {
		return "", TokenInfo{}, model.Errorf(model.ErrInvalid, "name %q: want letters, digits, '.', '_' or '-' (at most 63)", name)
	}
	if ttl < 0 {
		return "", TokenInfo{}, model.Errorf(model.ErrInvalid, "token ttl %v: want a positive duration", ttl)
	}
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	var id [8]byte
	var secret [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", TokenInfo{}, err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return "", TokenInfo{}, err
	}
	sum := sha256.Sum256(secret[:])
	now := e.cfg.Now()
	t := TokenInfo{ID: hex.EncodeToString(id[:]), Kind: kind, Name: name, Role: role, Hash: hex.EncodeToString(sum[:]),
		Created: now.UTC().Truncate(time.Second), Expires: now.Add(ttl).UTC().Truncate(time.Second)}
	val, _ := json.Marshal(t)
	if _, err := e.st.Txn(ctx, []store.Cond{store.Absent(keys.Token(t.ID))}, []store.Op{store.Put(keys.Token(t.ID), val)}); err != nil {
		return "", TokenInfo{}, storeErr(err)
	}
	return tokenPrefix + t.ID + "." + base64.RawURLEncoding.EncodeToString(secret[:]), t, nil
}

// parseToken splits a token into its id and secret.
func parseToken(tok string) (id string, secret []byte, ok bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(tok), tokenPrefix)
	if !ok {
		return "", nil, false
	}
	id, s, ok := strings.Cut(rest, ".")
	if !ok || len(id) != 16 {
		return "", nil, false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", nil, false
	}
	secret, err := base64.RawURLEncoding.DecodeString(s)
	return id, secret, err == nil && len(secret) == 32
}

// ListTokens lists the tokens not used yet (expired ones too, until deleted).
func (e *Enroller) ListTokens(ctx context.Context) ([]TokenInfo, error) {
	kvs, _, err := e.st.List(ctx, keys.Tokens)
	if err != nil {
		return nil, storeErr(err)
	}
	out := make([]TokenInfo, 0, len(kvs))
	for _, kv := range kvs {
		var t TokenInfo
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, model.Errorf(model.ErrCorrupt, "token %s: %w", kv.Key, err)
		}
		t.ID = strings.TrimPrefix(kv.Key, keys.Tokens)
		out = append(out, t)
	}
	return out, nil
}

// DeleteToken deletes a token by id.
func (e *Enroller) DeleteToken(ctx context.Context, id string) error {
	if _, err := e.st.Get(ctx, keys.Token(id)); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return model.Errorf(model.ErrNotFound, "token %q not found", id)
		}
		return storeErr(err)
	}
	_, err := e.st.Txn(ctx, nil, []store.Op{store.Delete(keys.Token(id))})
	return storeErr(err)
}

// errBadToken is the one answer to every unusable token, so that a caller
// learns nothing about which tokens exist.
func errBadToken() error {
	return model.Errorf(model.ErrUnauthenticated, "bootstrap token unknown, already used or expired: ask an admin for a new one (iotfabricctl gateway token create)")
}

// NeedCA returns the error of Join and Renew when the controller holds no
// CA key (nil when it does).
func (e *Enroller) NeedCA() error {
	if e.cfg.CA == nil {
		return model.Errorf(model.ErrConflict, "enrollment is off: this controller holds no CA key (api.enrollment.ca_key), an external CA issues the certificates; install a certificate from it instead")
	}
	return nil
}

// Join uses up token and issues a certificate for its identity to the key of
// csr (DER). Of several joins with one token, exactly one succeeds, also
// across controllers sharing the store: the token's deletion is conditional
// on its record being unchanged.
func (e *Enroller) Join(ctx context.Context, token string, csrDER []byte) (Issued, error) {
	if err := e.NeedCA(); err != nil {
		return Issued{}, err
	}
	id, secret, ok := parseToken(token)
	if !ok {
		return Issued{}, errBadToken()
	}
	kv, err := e.st.Get(ctx, keys.Token(id))
	if errors.Is(err, store.ErrNotFound) {
		return Issued{}, errBadToken()
	} else if err != nil {
		return Issued{}, storeErr(err)
	}
	var t TokenInfo
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return Issued{}, model.Errorf(model.ErrCorrupt, "token %s: %w", id, err)
	}
	sum := sha256.Sum256(secret)
	want, _ := hex.DecodeString(t.Hash)
	if subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return Issued{}, errBadToken()
	}
	now := e.cfg.Now()
	if !now.Before(t.Expires) {
		return Issued{}, errBadToken()
	}
	csr, err := parseCSR(csrDER)
	if err != nil {
		return Issued{}, err
	}
	ident := t.Identity()
	cert, err := e.cfg.CA.sign(csr, ident, now, e.cfg.Lifetime)
	if err != nil {
		return Issued{}, err
	}
	rec, _ := json.Marshal(certRecord{Identity: ident.String(), Issued: now.UTC(), NotAfter: cert.NotAfter, Via: "join"})
	_, err = e.st.Txn(ctx, []store.Cond{store.Unchanged(kv)},
		[]store.Op{store.Delete(kv.Key), store.Put(keys.Cert(ident.String(), Serial(cert.SerialNumber)), rec)})
	if errors.Is(err, store.ErrConflict) {
		return Issued{}, errBadToken() // used by a concurrent join
	} else if err != nil {
		return Issued{}, storeErr(err)
	}
	e.log.Info("certificate issued", logkey.Identity, ident.String(), logkey.Serial, Serial(cert.SerialNumber), logkey.Via, "join",
		logkey.NotAfter, cert.NotAfter)
	return Issued{Cert: cert, CA: e.cfg.CA.cert, Identity: ident}, nil
}

// Renew issues a new certificate for the identity of presented (the
// caller's verified certificate) to the key of csr. presented may have
// expired less than the grace ago; a revoked one is refused, also when the
// revocation races with the renewal.
func (e *Enroller) Renew(ctx context.Context, presented *x509.Certificate, csrDER []byte) (Issued, error) {
	if err := e.NeedCA(); err != nil {
		return Issued{}, err
	}
	ident := tlsconfig.IdentityOf(presented)
	if ident.Role == tlsconfig.RoleNone {
		return Issued{}, model.Errorf(model.ErrInvalid, "the certificate %s carries no iotfabric role: nothing to renew", ident)
	}
	now := e.cfg.Now()
	if now.After(presented.NotAfter.Add(e.cfg.Grace)) {
		return Issued{}, model.Errorf(model.ErrUnauthenticated, "certificate of %s expired at %s, beyond the renewal grace of %v: enroll again with a new token",
			ident, presented.NotAfter.UTC().Format(time.RFC3339), e.cfg.Grace)
	}
	csr, err := parseCSR(csrDER)
	if err != nil {
		return Issued{}, err
	}
	cert, err := e.cfg.CA.sign(csr, ident, now, e.cfg.Lifetime)
	if err != nil {
		return Issued{}, err
	}
	rec, _ := json.Marshal(certRecord{Identity: ident.String(), Issued: now.UTC(), NotAfter: cert.NotAfter, Via: "renew"})
	_, err = e.st.Txn(ctx, []store.Cond{store.Absent(keys.RevokedCert(Serial(presented.SerialNumber)))},
		[]store.Op{store.Put(keys.Cert(ident.String(), Serial(cert.SerialNumber)), rec)})
	if errors.Is(err, store.ErrConflict) {
		return Issued{}, model.Errorf(model.ErrUnauthenticated, "certificate %s of %s is revoked", Serial(presented.SerialNumber), ident)
	} else if err != nil {
		return Issued{}, storeErr(err)
	}
	e.log.Info("certificate issued", logkey.Identity, ident.String(), logkey.Serial, Serial(cert.SerialNumber), logkey.Via, "renew",
		logkey.NotAfter, cert.NotAfter)
	return Issued{Cert: cert, CA: e.cfg.CA.cert, Identity: ident}, nil
}

// Revoke revokes every certificate issued to identity (gateway:<name>,
// admin:<name>...): their serials move from the issued to the revoked set.
// It returns the serials revoked. A renewal racing with it either committed
// before (its certificate is found by the next pass) or fails.
func (e *Enroller) Revoke(ctx context.Context, identity string) ([]string, error) {
	var serials []string
	now := e.cfg.Now().UTC()
	for pass := 0; pass < 10; pass++ {
		kvs, _, err := e.st.List(ctx, keys.IdentityCerts(identity))
		if err != nil {
			return serials, storeErr(err)
		}
		if len(kvs) == 0 {
			return serials, nil
		}
		var ops []store.Op
		for _, kv := range kvs {
			var rec certRecord
			json.Unmarshal(kv.Value, &rec)
			serial := strings.TrimPrefix(kv.Key, keys.IdentityCerts(identity))
			val, _ := json.Marshal(RevokedInfo{Identity: identity, Revoked: now, NotAfter: rec.NotAfter})
			ops = append(ops, store.Delete(kv.Key), store.Put(keys.RevokedCert(serial), val))
			serials = append(serials, serial)
		}
		if _, err := e.st.Txn(ctx, nil, ops); err != nil {
			return serials, storeErr(err)
		}
		if e.cfg.Revocations != nil {
			e.cfg.Revocations.Add(serials...)
		}
		e.log.Warn("certificates revoked", logkey.Identity, identity, logkey.Count, len(kvs))
	}
	return serials, model.Errorf(model.ErrAborted, "certificates of %s keep being issued while revoking", identity)
}

// ListRevoked lists the revoked certificates.
func (e *Enroller) ListRevoked(ctx context.Context) ([]RevokedInfo, error) {
	kvs, _, err := e.st.List(ctx, keys.Revoked)
	if err != nil {
		return nil, storeErr(err)
	}
	out := make([]RevokedInfo, 0, len(kvs))
	for _, kv := range kvs {
		var r RevokedInfo
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, model.Errorf(model.ErrCorrupt, "revoked certificate %s: %w", kv.Key, err)
		}
		r.Serial = keys.RevokedSerial(kv.Key)
		out = append(out, r)
	}
	return out, nil
}

func storeErr(err error) error {
	if err == nil || model.HasKind(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return model.Errorf(model.ErrUnavailable, "store: %w", err)
}

// String spells a kind.
func (k Kind) String() string { return string(k) }
