package kubelite

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// kubeconfig is the part of a kubeconfig file (clientcmd's v1 Config) the
// client reads: the current context's cluster and user.
type kubeconfig struct {
	Clusters []struct {
		Name    string    `json:"name"`
		Cluster kcCluster `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User kcUser `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	CurrentContext string `json:"current-context"`
}

type kcCluster struct {
	Server                   string `json:"server"`
	CertificateAuthority     string `json:"certificate-authority"`
	CertificateAuthorityData []byte `json:"certificate-authority-data"`
	InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
	TLSServerName            string `json:"tls-server-name"`
	ProxyURL                 string `json:"proxy-url"`
}

type kcUser struct {
	ClientCertificate     string `json:"client-certificate"`
	ClientCertificateData []byte `json:"client-certificate-data"`
	ClientKey             string `json:"client-key"`
	ClientKeyData         []byte `json:"client-key-data"`
	Token                 string `json:"token"`
	TokenFile             string `json:"tokenFile"`

	// Not supported; named in the error.
	Exec         json.RawMessage `json:"exec"`
	AuthProvider json.RawMessage `json:"auth-provider"`
	Username     string          `json:"username"`
	Password     string          `json:"password"`
	As           string          `json:"as"`
	AsUID        string          `json:"as-uid"`
	AsGroups     []string        `json:"as-groups"`
}

// ErrUnsupportedKubeconfig: the kubeconfig asks for something this client
// does not do (an exec or auth-provider credential plugin, basic
// authentication, impersonation).
var ErrUnsupportedKubeconfig = errors.New("unsupported in a kubeconfig for the iotfabric agent")

// LoadKubeconfig reads a kubeconfig file and returns the configuration of
// its current context: the cluster's server, CA (certificate-authority or
// -data, or insecure-skip-tls-verify), tls-server-name and proxy-url; the
// user's token or tokenFile, and client certificate and key (files or
// -data). Relative paths are relative to the file's directory, as kubectl
// takes them. Credential plugins (exec, auth-provider), basic
// authentication and impersonation are refused with
// ErrUnsupportedKubeconfig: give the agent a token, a token file or a
// client certificate.
func LoadKubeconfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	c, err := ParseKubeconfig(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return c, nil
}

// ParseKubeconfig is LoadKubeconfig of the file's content; relative paths
// are taken from dir.
func ParseKubeconfig(data []byte, dir string) (*Config, error) {
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, err
	}
	if kc.CurrentContext == "" {
		return nil, errors.New("no current-context")
	}
	var cluster, user string
	found := false
	for _, x := range kc.Contexts {
		if x.Name == kc.CurrentContext {
			cluster, user, found = x.Context.Cluster, x.Context.User, true
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("current-context %q is not among the contexts", kc.CurrentContext)
	}
	var cl *kcCluster
	for i := range kc.Clusters {
		if kc.Clusters[i].Name == cluster {
			cl = &kc.Clusters[i].Cluster
			break
		}
	}
	if cl == nil {
		return nil, fmt.Errorf("context %q: no cluster %q", kc.CurrentContext, cluster)
	}
	if cl.Server == "" {
		return nil, fmt.Errorf("cluster %q has no server", cluster)
	}
	c := &Config{Server: cl.Server, CAData: cl.CertificateAuthorityData, CAFile: resolve(dir, cl.CertificateAuthority),
		Insecure: cl.InsecureSkipTLSVerify, ServerName: cl.TLSServerName, ProxyURL: cl.ProxyURL}
	if user == "" {
		return c, nil // no credentials: anonymous
	}
	var u *kcUser
	for i := range kc.Users {
		if kc.Users[i].Name == user {
			u = &kc.Users[i].User
			break
		}
	}
	if u == nil {
		return nil, fmt.Errorf("context %q: no user %q", kc.CurrentContext, user)
	}
	var unsupported []string
	for _, x := range []struct {
		set  bool
		what string
	}{{len(u.Exec) > 0 && string(u.Exec) != "null", "exec credential plugins (users[].user.exec)"},
		{len(u.AuthProvider) > 0 && string(u.AuthProvider) != "null", "auth-provider plugins (users[].user.auth-provider)"},
		{u.Username != "" || u.Password != "", "basic authentication (username, password)"},
		{u.As != "" || u.AsUID != "" || len(u.AsGroups) > 0, "impersonation (as, as-uid, as-groups)"}} {
		if x.set {
			unsupported = append(unsupported, x.what)
		}
	}
	if len(unsupported) > 0 {
		return nil, fmt.Errorf("user %q: %s: %w; give the agent a token, a tokenFile or a client certificate", user, strings.Join(unsupported, ", "), ErrUnsupportedKubeconfig)
	}
	c.Token, c.TokenFile = u.Token, resolve(dir, u.TokenFile)
	c.CertData, c.CertFile = u.ClientCertificateData, resolve(dir, u.ClientCertificate)
	c.KeyData, c.KeyFile = u.ClientKeyData, resolve(dir, u.ClientKey)
	return c, nil
}

func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}
