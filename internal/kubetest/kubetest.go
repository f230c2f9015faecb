// Package kubetest starts a real Kubernetes API server (kube-apiserver built
// from the k8s.io/kubernetes module pinned in tools/kube, by `make kube-bin`)
// on loopback, backed by Debian's etcd (pkg/store/etcd/etcdtest), for the
// tests of pkg/kube and the manifests in deploy/kubernetes.
//
// The binaries are looked up in $IOTFABRIC_KUBE_BIN, else in
// /var/cache/iotfabric/kube/<version>/ (the version is tools/kube/go.mod's).
// When they are missing a test is skipped, or fails under
// IOTFABRIC_TEST_STRICT=1 (internal/testenv), naming `make kube-bin`.
//
// It owns only the processes and files it starts; authentication is a static
// token file (an admin in system:masters, plus the users a test asks for) and
// authorization is RBAC.
package kubetest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
)

// BinEnv names a directory holding kube-apiserver and kubectl.
const BinEnv = "IOTFABRIC_KUBE_BIN"

// DefaultCache is where scripts/kube-build.sh caches the binaries by version.
const DefaultCache = "/var/cache/iotfabric/kube"

// User is an identity of the static token file.
type User struct {
	Name   string
	Groups []string
}

// Server is a running API server.
type Server struct {
	// URL is https://127.0.0.1:PORT.
	URL string
	// Dir holds the certificates, keys, token file and kubeconfig.
	Dir string
	// Kubeconfig is the admin's kubeconfig (for kubectl).
	Kubeconfig string
	// Kubectl is the kubectl binary built with the API server.
	Kubectl string

	bin    string
	args   []string
	etcd   *etcdtest.Server
	tokens map[string]string // user -> token

	mu     sync.Mutex
	cmd    *exec.Cmd
	log    *syncbuf.Buffer
	exited chan struct{}
}

// Version returns the k8s.io/kubernetes version pinned in tools/kube/go.mod.
func Version() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, "tools", "kube", "go.mod"))
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "require" && f[1] == "k8s.io/kubernetes" {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("tools/kube/go.mod requires no k8s.io/kubernetes")
}

// moduleRoot is the directory of the main module's go.mod, found upward from
// the working directory (a test's package directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/iotfabric/iotfabric\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no iotfabric go.mod above the working directory")
		}
		dir = parent
	}
}

// BinDir returns the directory of kube-apiserver and kubectl, or skips (fails
// under IOTFABRIC_TEST_STRICT) the test when they are not built.
func BinDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(BinEnv)
	if dir == "" {
		v, err := Version()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(DefaultCache, v)
	}
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
		testenv.Missing(t, "kube-apiserver not found in %s: run `make kube-bin` (builds it from tools/kube, about 6 minutes cold)", dir)
	}
	return dir
}

// kubectl is the kubectl built with the API server, else the machine's.
func kubectl(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "kubectl")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	testenv.Missing(t, "kubectl not found in %s nor on PATH: run `make kube-bin`", dir)
	return ""
}

// Start runs etcd and an API server until the test ends. users get a bearer
// token each (see Config); "admin" is always there, in system:masters.
func Start(t testing.TB, users ...User) *Server {
	t.Helper()
	testenv.RequireProgram(t, "etcd", "etcd-server")
	bin := BinDir(t)
	s := &Server{Dir: t.TempDir(), bin: filepath.Join(bin, "kube-apiserver"), Kubectl: kubectl(t, bin), tokens: map[string]string{}}
	s.etcd = etcdtest.Start(t)
	users = append([]User{{Name: "admin", Groups: []string{"system:masters"}}}, users...)
	var tokens strings.Builder
	for i, u := range users {
		tok := randHex(t)
		s.tokens[u.Name] = tok
		fmt.Fprintf(&tokens, "%s,%s,uid-%d,\"%s\"\n", tok, u.Name, i, strings.Join(u.Groups, ","))
	}
	write(t, filepath.Join(s.Dir, "tokens.csv"), tokens.String())
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	write(t, filepath.Join(s.Dir, "sa.key"), string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
	write(t, filepath.Join(s.Dir, "sa.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})))
	port := freePort(t)
	s.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	s.args = []string{
		"--etcd-servers=" + s.etcd.Endpoint,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(s.Dir, "certs"),
		"--service-cluster-ip-range=10.96.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(s.Dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(s.Dir, "sa.key"),
		"--token-auth-file=" + filepath.Join(s.Dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
	}
	s.Kubeconfig = filepath.Join(s.Dir, "kubeconfig")
	write(t, s.Kubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, s.URL, s.tokens["admin"]))
	t.Cleanup(s.Stop)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Stop stops the API server (etcd keeps running); Restart starts it again
// with the same state and address.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Kill kills the API server at once (no graceful shutdown: connections
// just break, as when its machine fails); Restart starts it again.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// Restart starts a stopped API server again.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) start() error {
	log := &syncbuf.Buffer{}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the forking thread exits: hold it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			cmd.Wait()
			close(exited)
		}
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	s.mu.Lock()
	s.cmd, s.log, s.exited = cmd, log, exited
	s.mu.Unlock()
	return s.waitReady(exited, log, 60*time.Second)
}

func (s *Server) waitReady(exited chan struct{}, log *syncbuf.Buffer, d time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("kube-apiserver exited: %s", tail(log.String()))
		default:
		}
		req, _ := http.NewRequest("GET", s.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.tokens["admin"])
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %v: %s", d, tail(log.String()))
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// Config returns a client configuration for user (a name given to Start, or
// "admin").
func (s *Server) Config(t testing.TB, user string) *rest.Config {
	t.Helper()
	tok, ok := s.tokens[user]
	if !ok {
		t.Fatalf("kubetest: no user %q", user)
	}
	return &rest.Config{Host: s.URL, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 1000, Burst: 2000}
}

// Client returns a typed clientset for user.
func (s *Server) Client(t testing.TB, user string) *kubernetes.Clientset {
	t.Helper()
	c, err := kubernetes.NewForConfig(s.Config(t, user))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// RunKubectl runs kubectl as the admin with args and returns its combined output.
func (s *Server) RunKubectl(args ...string) (string, error) {
	cmd := exec.Command(s.Kubectl, append([]string{"--kubeconfig", s.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Log returns the API server's output so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func randHex(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Namespace returns a namespace object named name.
func Namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// KubeconfigFor writes a kubeconfig for user (a name given to Start, or
// "admin") and returns its path, for programs configured with a file.
func (s *Server) KubeconfigFor(t testing.TB, user string) string {
	t.Helper()
	tok, ok := s.tokens[user]
	if !ok {
		t.Fatalf("kubetest: no user %q", user)
	}
	p := filepath.Join(s.Dir, "kubeconfig-"+strings.NewReplacer(":", "_", "/", "_").Replace(user))
	write(t, p, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: u}
current-context: test
`, s.URL, tok))
	return p
}

// The service accounts of deploy/kubernetes/rbac.yaml as token-file users
// (pass them to Start; Apply the manifests to bind their roles).
var (
	ControllerUser = User{Name: "system:serviceaccount:iotfabric-system:iotfabric-controller", Groups: []string{"system:serviceaccounts"}}
	AgentUser      = User{Name: "system:serviceaccount:iotfabric-system:iotfabric-agent", Groups: []string{"system:serviceaccounts"}}
)

// Apply applies files of deploy/kubernetes (the CRD is waited for until
// established).
func (s *Server) Apply(t testing.TB, files ...string) {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if out, err := s.RunKubectl("apply", "-f", filepath.Join(root, "deploy", "kubernetes", f)); err != nil {
			t.Fatalf("apply %s: %v\n%s", f, err, out)
		}
		if strings.HasPrefix(f, "crd-") {
			if out, err := s.RunKubectl("wait", "--for=condition=established", "--timeout=60s", "-f", filepath.Join(root, "deploy", "kubernetes", f)); err != nil {
				t.Fatalf("%s not established: %v\n%s", f, err, out)
			}
		}
	}
}

// RunKubectlStdin is RunKubectl with stdin (e.g. `apply -f -`).
func (s *Server) RunKubectlStdin(stdin string, args ...string) (string, error) {
	cmd := exec.Command(s.Kubectl, append([]string{"--kubeconfig", s.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
