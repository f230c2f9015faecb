package kubelite

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKubeconfig(t *testing.T) {
	const head = `apiVersion: v1
kind: Config
current-context: c
contexts:
- name: other
  context: {cluster: nope, user: nope}
- name: c
  context: {cluster: k, user: u, namespace: ignored}
preferences: {}
`
	for _, c := range []struct {
		name, yaml string
		want       Config
		err        string
	}{
		{name: "token and CA data", yaml: head + `clusters:
- name: k
  cluster: {server: "https://10.0.0.1:6443", certificate-authority-data: "Q0E=", tls-server-name: kube}
users:
- name: u
  user: {token: s3cret}
`, want: Config{Server: "https://10.0.0.1:6443", CAData: []byte("CA"), ServerName: "kube", Token: "s3cret"}},
		{name: "files relative to the kubeconfig", yaml: head + `clusters:
- name: k
  cluster: {server: "https://k:6443", certificate-authority: ca.crt, proxy-url: "http://proxy:3128"}
users:
- name: u
  user: {tokenFile: tok, client-certificate: /abs/c.crt, client-key: k.key}
`, want: Config{Server: "https://k:6443", CAFile: "/cfg/ca.crt", ProxyURL: "http://proxy:3128", TokenFile: "/cfg/tok", CertFile: "/abs/c.crt", KeyFile: "/cfg/k.key"}},
		{name: "client certificate data, insecure", yaml: head + `clusters:
- name: k
  cluster: {server: "https://k", insecure-skip-tls-verify: true}
users:
- name: u
  user: {client-certificate-data: "Q0VSVA==", client-key-data: "S0VZ"}
`, want: Config{Server: "https://k", Insecure: true, CertData: []byte("CERT"), KeyData: []byte("KEY")}},
		{name: "exec plugin", yaml: head + `clusters:
- name: k
  cluster: {server: "https://k"}
users:
- name: u
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws, args: [eks, get-token]}
`, err: "exec credential plugins"},
		{name: "auth-provider and basic", yaml: head + `clusters:
- name: k
  cluster: {server: "https://k"}
users:
- name: u
  user: {auth-provider: {name: gcp}, username: a, password: b}
`, err: "auth-provider plugins (users[].user.auth-provider), basic authentication"},
		{name: "impersonation", yaml: head + `clusters:
- name: k
  cluster: {server: "https://k"}
users:
- name: u
  user: {token: t, as: admin}
`, err: "impersonation"},
		{name: "no such cluster", yaml: head + `clusters: []
users: []
`, err: `no cluster "k"`},
		{name: "no server", yaml: head + `clusters:
- name: k
  cluster: {}
`, err: "has no server"},
		{name: "no such user", yaml: head + `clusters:
- name: k
  cluster: {server: "https://k"}
`, err: `no user "u"`},
		{name: "no current context", yaml: "clusters: []\n", err: "no current-context"},
		{name: "unknown current context", yaml: "current-context: x\n", err: `current-context "x" is not among`},
		{name: "not YAML", yaml: "a: [", err: "yaml"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseKubeconfig([]byte(c.yaml), "/cfg")
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				if strings.Contains(c.name, "plugin") && !errors.Is(err, ErrUnsupportedKubeconfig) {
					t.Fatalf("%v is not ErrUnsupportedKubeconfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Server != c.want.Server || string(got.CAData) != string(c.want.CAData) || got.CAFile != c.want.CAFile ||
				got.Insecure != c.want.Insecure || got.ServerName != c.want.ServerName || got.ProxyURL != c.want.ProxyURL ||
				got.Token != c.want.Token || got.TokenFile != c.want.TokenFile || string(got.CertData) != string(c.want.CertData) ||
				string(got.KeyData) != string(c.want.KeyData) || got.CertFile != c.want.CertFile || got.KeyFile != c.want.KeyFile {
				t.Fatalf("got %+v\nwant %+v", *got, c.want)
			}
		})
	}
}

// TestClientCertificateFilesReloaded: a rotated client certificate is taken
// at the next handshake; a half-written one keeps the previous.
func TestClientCertificateFilesReloaded(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	write := func(c, k []byte) {
		if err := os.WriteFile(crt, c, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(key, k, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c1, k1 := selfSignedPair(t)
	write(c1, k1)
	cfg := Config{Server: "https://k", CertFile: crt, KeyFile: key}
	tc, err := cfg.tlsConfig("k")
	if err != nil {
		t.Fatal(err)
	}
	got1, err := tc.GetClientCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, k2 := selfSignedPair(t)
	write(c2, k2)
	got2, err := tc.GetClientCertificate(nil)
	if err != nil || string(got2.Certificate[0]) == string(got1.Certificate[0]) {
		t.Fatalf("rotated certificate not taken: %v", err)
	}
	write(c1, k2) // mismatched while being rewritten
	got3, err := tc.GetClientCertificate(nil)
	if err != nil || string(got3.Certificate[0]) != string(got2.Certificate[0]) {
		t.Fatalf("half-written pair: %v", err)
	}
	if _, err := (&Config{Server: "https://k", CertFile: filepath.Join(dir, "none"), KeyFile: key}).tlsConfig("k"); err == nil {
		t.Fatal("a missing certificate file is accepted")
	}
}

func TestNewRefusesBadServer(t *testing.T) {
	for _, s := range []string{"", "10.0.0.1:6443", "ftp://k", "https://"} {
		if _, err := New(Config{Server: s}); err == nil {
			t.Errorf("server %q accepted", s)
		}
	}
	if _, err := New(Config{Server: "https://k", TokenFile: "/nonexistent/token"}); err == nil {
		t.Error("a missing token file is accepted")
	}
	if _, err := New(Config{Server: "https://k", CAData: []byte("not PEM")}); err == nil {
		t.Error("a CA without a certificate is accepted")
	}
}
