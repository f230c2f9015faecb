package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/iotfabric/iotfabric/internal/atomicfile"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
)

// configEnv names the environment variable that names the config file.
const configEnv = "IOTFABRIC_CONFIG"

// configFile is the CLI's config file: named contexts, each a controller and
// the files to reach it with, and the context used when --context is not given.
type configFile struct {
	CurrentContext string          `yaml:"current-context,omitempty"`
	Contexts       []configContext `yaml:"contexts"`
}

// configContext is one controller. Relative paths are relative to the file's directory.
type configContext struct {
	Name    string        `yaml:"name"`
	Server  string        `yaml:"server,omitempty"`
	TLSCert string        `yaml:"tls-cert,omitempty"`
	TLSKey  string        `yaml:"tls-key,omitempty"`
	TLSCA   string        `yaml:"tls-ca,omitempty"`
	Timeout time.Duration `yaml:"timeout,omitempty"`
}

// configPath is where the config file is: $IOTFABRIC_CONFIG, else
// $XDG_CONFIG_HOME/iotfabric/config.yaml, else ~/.config/iotfabric/config.yaml.
func configPath() (string, error) {
	if p := os.Getenv(configEnv); p != "" {
		return p, nil
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("config file: set $%s or $HOME: %w", configEnv, err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "iotfabric", "config.yaml"), nil
}

// loadConfig reads the config file at path. A missing file is an empty config.
func loadConfig(path string) (*configFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &configFile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return parseConfig(path, b)
}

// parseConfig decodes and checks a config file; errors name the file and the line.
func parseConfig(path string, b []byte) (*configFile, error) {
	var cf configFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cf); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.ReplaceAll(strings.TrimPrefix(msg, "unmarshal errors:\n  "), "\n  ", "; ")
		return nil, fmt.Errorf("config file %s: %s", path, msg)
	}
	seen := map[string]bool{}
	for i, x := range cf.Contexts {
		if x.Name == "" {
			return nil, fmt.Errorf("config file %s: context %d has no name", path, i+1)
		}
		if seen[x.Name] {
			return nil, fmt.Errorf("config file %s: context %q appears twice", path, x.Name)
		}
		seen[x.Name] = true
		if (x.TLSCert == "") != (x.TLSKey == "") {
			return nil, fmt.Errorf("config file %s: context %q: tls-cert and tls-key go together", path, x.Name)
		}
		if x.Timeout < 0 {
			return nil, fmt.Errorf("config file %s: context %q: negative timeout %s", path, x.Name, x.Timeout)
		}
	}
	return &cf, nil
}

// find returns the named context, or an error that lists the known ones.
func (cf *configFile) find(name string) (*configContext, error) {
	for i := range cf.Contexts {
		if cf.Contexts[i].Name == name {
			return &cf.Contexts[i], nil
		}
	}
	return nil, fmt.Errorf("unknown context %q: %s", name, cf.known())
}

func (cf *configFile) known() string {
	if len(cf.Contexts) == 0 {
		return "the config file has no contexts"
	}
	names := make([]string, len(cf.Contexts))
	for i, x := range cf.Contexts {
		names[i] = x.Name
	}
	return "known contexts: " + strings.Join(names, ", ")
}

// saveConfig writes the file atomically (a temporary file renamed over it),
// mode 0600 in a directory made with mode 0700.
func saveConfig(path string, cf *configFile) error {
	b, err := yaml.Marshal(cf)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return nil
}

// settings is what a command uses to reach the controller.
type settings struct {
	server  string
	timeout time.Duration
	tls     tlsconfig.Files
	// tlsContext names the context the TLS files come from ("" for the flags).
	tlsContext string
}

// given is what the command line and the environment say; an empty field or a
// zero timeout was not given.
type given struct {
	server, envServer string
	timeout           time.Duration
	tls               tlsconfig.Files
}

// resolve applies the precedence: flags, then $IOTFABRIC_SERVER (server only),
// then the context (nil: none), then the defaults. The three TLS files go
// together: any of them on the command line replaces all of the context's.
// dir is the config file's directory, against which the context's relative paths are read.
func resolve(g given, x *configContext, dir string) settings {
	s := settings{server: defaultServer, timeout: defaultTimeout}
	if x != nil {
		if x.Server != "" {
			s.server = x.Server
		}
		if x.Timeout > 0 {
			s.timeout = x.Timeout
		}
		s.tls = tlsconfig.Files{Cert: inDir(dir, x.TLSCert), Key: inDir(dir, x.TLSKey), CA: inDir(dir, x.TLSCA)}
		if s.tls.Enabled() {
			s.tlsContext = x.Name
		}
	}
	if g.envServer != "" {
		s.server = g.envServer
	}
	if g.server != "" {
		s.server = g.server
	}
	if g.timeout > 0 {
		s.timeout = g.timeout
	}
	if g.tls.Enabled() {
		s.tls, s.tlsContext = g.tls, ""
	}
	return s
}

// inDir reads a relative path against dir.
func inDir(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// selectContext picks the context named by --context (name), else the file's
// current context; nil when neither names one.
func selectContext(cf *configFile, name string) (*configContext, error) {
	if name != "" {
		x, err := cf.find(name)
		if err != nil {
			return nil, usagef("%v", err)
		}
		return x, nil
	}
	if cf.CurrentContext == "" {
		return nil, nil
	}
	x, err := cf.find(cf.CurrentContext)
	if err != nil {
		return nil, fmt.Errorf("current-context: %w", err)
	}
	return x, nil
}

// contextNames lists the contexts' names in file order.
func (cf *configFile) contextNames() []string {
	var names []string
	for _, x := range cf.Contexts {
		names = append(names, x.Name)
	}
	return names
}

// deleteContext removes a context; the current context, if it was this one, is unset.
func (cf *configFile) deleteContext(name string) error {
	if _, err := cf.find(name); err != nil {
		return err
	}
	cf.Contexts = slices.DeleteFunc(cf.Contexts, func(x configContext) bool { return x.Name == name })
	if cf.CurrentContext == name {
		cf.CurrentContext = ""
	}
	return nil
}
