package kubelite

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultMaxObjectBytes bounds one object, one watch event and one response
// body: above etcd's default request limit (1.5 MiB), so that the API server
// never sends a larger object unless something is wrong.
const DefaultMaxObjectBytes = 2 << 20

// Config says how to reach the API server and who to be there.
type Config struct {
	// Server is the API server's URL (https://host:port).
	Server string
	// CAData (PEM) or CAFile verify the server's certificate; with neither,
	// the system's roots do.
	CAData []byte
	CAFile string
	// Insecure skips the verification of the server's certificate (a
	// kubeconfig's insecure-skip-tls-verify).
	Insecure bool
	// ServerName is the name checked in the server's certificate (default:
	// the host of Server).
	ServerName string
	// ProxyURL is a proxy for every request (default: none).
	ProxyURL string

	// Token is a bearer token. TokenFile holds one and wins over Token: it
	// is read again whenever it changes (the kubelet rotates a projected
	// service account token), and at once after a 401.
	Token     string
	TokenFile string
	// A client certificate and its key, as PEM data or as files; the files
	// are read again whenever they change.
	CertData, KeyData []byte
	CertFile, KeyFile string

	// UserAgent names the client (default "iotfabric").
	UserAgent string
	// MaxObjectBytes bounds one object, one watch event and one response
	// body (default DefaultMaxObjectBytes); a larger one is refused with a
	// TooLargeError.
	MaxObjectBytes int64
}

// The in-cluster configuration: the environment the kubelet gives every
// container, and the service account's files.
const (
	EnvServiceHost    = "KUBERNETES_SERVICE_HOST"
	EnvServicePort    = "KUBERNETES_SERVICE_PORT"
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// ErrNotInCluster: KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is
// not set, so this is not a pod.
var ErrNotInCluster = errors.New("not running in a Kubernetes pod: " + EnvServiceHost + " and " + EnvServicePort + " are not set (give a kubeconfig)")

// InCluster is the configuration of a pod: the API server of
// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, the service
// account's token (read again as the kubelet rotates it) and CA.
func InCluster() (*Config, error) { return InClusterFrom(ServiceAccountDir, os.Getenv) }

// InClusterFrom is InCluster with the service account's directory and the
// environment given.
func InClusterFrom(dir string, getenv func(string) string) (*Config, error) {
	host, port := getenv(EnvServiceHost), getenv(EnvServicePort)
	if host == "" || port == "" {
		return nil, ErrNotInCluster
	}
	c := &Config{Server: "https://" + net.JoinHostPort(host, port),
		TokenFile: filepath.Join(dir, "token"), CAFile: filepath.Join(dir, "ca.crt")}
	for _, f := range []string{c.TokenFile, c.CAFile} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("in-cluster configuration: %w", err)
		}
	}
	return c, nil
}

// tlsConfig builds the client's TLS configuration.
func (c *Config) tlsConfig(host string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.Insecure, ServerName: c.ServerName}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	ca := c.CAData
	if len(ca) == 0 && c.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(c.CAFile); err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
	}
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, errors.New("CA: no PEM certificate in it")
		}
		tc.RootCAs = pool
	}
	switch {
	case len(c.CertData) > 0 || len(c.KeyData) > 0 || c.CertFile != "" || c.KeyFile != "":
		l := &certLoader{certData: c.CertData, keyData: c.KeyData, certFile: c.CertFile, keyFile: c.KeyFile}
		if _, err := l.get(); err != nil {
			return nil, err
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return l.get() }
	}
	return tc, nil
}

// certLoader holds the client certificate, loaded again when a file of it
// changed.
type certLoader struct {
	certData, keyData []byte
	certFile, keyFile string

	mu    sync.Mutex
	stamp string
	cert  *tls.Certificate
}

func (l *certLoader) get() (*tls.Certificate, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	stamp := fileStamp(l.certFile) + fileStamp(l.keyFile)
	if l.cert != nil && stamp == l.stamp {
		return l.cert, nil
	}
	certPEM, keyPEM := l.certData, l.keyData
	var err error
	if len(certPEM) == 0 && l.certFile != "" {
		if certPEM, err = os.ReadFile(l.certFile); err != nil {
			return l.keep(fmt.Errorf("client certificate: %w", err))
		}
	}
	if len(keyPEM) == 0 && l.keyFile != "" {
		if keyPEM, err = os.ReadFile(l.keyFile); err != nil {
			return l.keep(fmt.Errorf("client key: %w", err))
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return l.keep(fmt.Errorf("client certificate and key: %w", err))
	}
	l.cert, l.stamp = &cert, stamp
	return l.cert, nil
}

// keep answers the certificate loaded before, when a rotation is half
// written; the error when there is none.
func (l *certLoader) keep(err error) (*tls.Certificate, error) {
	if l.cert != nil {
		return l.cert, nil
	}
	return nil, err
}

// fileStamp identifies a file's version (empty for no file).
func fileStamp(path string) string {
	if path == "" {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
}

// tokenSource answers the bearer token: the file's content, read again when
// the file changed, at least every tokenMaxAge, and after a 401.
type tokenSource struct {
	static string
	file   string

	mu    sync.Mutex
	stamp string
	read  time.Time
	tok   string
}

// tokenMaxAge bounds how long a token read from a file is used without
// reading the file again (as client-go).
const tokenMaxAge = time.Minute

func (s *tokenSource) token() (string, error) {
	if s.file == "" {
		return s.static, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	stamp := fileStamp(s.file)
	if s.tok != "" && stamp == s.stamp && time.Since(s.read) < tokenMaxAge {
		return s.tok, nil
	}
	b, err := os.ReadFile(s.file)
	tok := string(bytes.TrimSpace(b))
	switch {
	case err == nil && tok != "":
		s.tok, s.stamp, s.read = tok, stamp, time.Now()
	case s.tok != "":
		// Being rewritten: the previous one until the file is whole.
	case err != nil:
		return "", fmt.Errorf("token: %w", err)
	default:
		return "", fmt.Errorf("token: %s is empty", s.file)
	}
	return s.tok, nil
}

// expire makes the next request read the file again (after a 401).
func (s *tokenSource) expire() {
	s.mu.Lock()
	s.stamp = ""
	s.mu.Unlock()
}
