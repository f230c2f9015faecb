package kubelite

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/iotfabric/iotfabric/internal/kubetest"
)

// The tests here run the client against a real kube-apiserver
// (internal/kubetest); objects are made with client-go as the admin.

func startAPI(t *testing.T, users ...kubetest.User) (*kubetest.Server, *kubernetes.Clientset) {
	t.Helper()
	s := kubetest.Start(t, users...)
	return s, s.Client(t, "admin")
}

// configFor is the configuration of user, its token in a file of its own.
func configFor(t *testing.T, s *kubetest.Server, user string) *Config {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	writeToken(t, f, s.Config(t, user).BearerToken)
	return &Config{Server: s.URL, Insecure: true, TokenFile: f}
}

// writeToken replaces the token file the way the kubelet does: a new file
// renamed over the old one.
func writeToken(t *testing.T, path, tok string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func mkPod(t *testing.T, ctx context.Context, kc *kubernetes.Clientset, ns, name, node string, ann map[string]string) *corev1.Pod {
	t.Helper()
	p, err := kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runInformer runs inf until the test ends.
func runInformer[T Object](t *testing.T, inf *Informer[T]) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); inf.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the informer did not stop with its context")
		}
	})
}

// waitFor waits until cond holds, woken by the informer's changes.
func waitFor[T Object](t *testing.T, inf *Informer[T], what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-inf.Changed():
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %v (informer error: %v)", what, d, inf.Err())
		}
	}
}

// TestInformerAddUpdateDelete: the node-scoped pod informer lists the
// node's pods only, then sees a pod added, its annotation changed and the
// pod deleted; the namespace informer sees a namespace's annotation.
func TestInformerAddUpdateDelete(t *testing.T) {
	s, kc := startAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := kc.CoreV1().Namespaces().Create(ctx, kubetest.Namespace("team"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mkPod(t, ctx, kc, "team", "before", "node-1", map[string]string{"iotfabric.io/network": "blue"})
	mkPod(t, ctx, kc, "team", "elsewhere", "node-2", nil)

	c, err := New(*configFor(t, s, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	pods := NewPodInformer(c, InformerOptions{FieldSelector: "spec.nodeName=node-1"})
	nss := NewNamespaceInformer(c, InformerOptions{})
	runInformer(t, pods)
	runInformer(t, nss)
	waitFor(t, pods, "pods synced", 30*time.Second, pods.Synced)
	waitFor(t, nss, "namespaces synced", 30*time.Second, nss.Synced)
	if p, ok := pods.Get("team/before"); !ok || p.Metadata.Annotations["iotfabric.io/network"] != "blue" || p.Spec.NodeName != "node-1" || p.Metadata.UID == "" {
		t.Fatalf("listed pod: %+v %v", p, ok)
	}
	if pods.Len() != 1 {
		t.Fatalf("%d pods cached, want 1 (not node-2's)", pods.Len())
	}
	if _, ok := nss.Get("team"); !ok {
		t.Fatal("namespace team not cached")
	}

	// Add.
	added := mkPod(t, ctx, kc, "team", "added", "node-1", nil)
	mkPod(t, ctx, kc, "team", "added-elsewhere", "node-2", nil)
	waitFor(t, pods, "added pod", 20*time.Second, func() bool { _, ok := pods.Get("team/added"); return ok })
	if p, _ := pods.Get("team/added"); p.Metadata.UID != string(added.UID) {
		t.Fatalf("UID %s, want %s", p.Metadata.UID, added.UID)
	}
	// Update.
	if _, err := kc.CoreV1().Pods("team").Patch(ctx, "added", "application/merge-patch+json",
		[]byte(`{"metadata":{"annotations":{"iotfabric.io/ip":"10.0.0.9"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pods, "updated annotation", 20*time.Second, func() bool {
		p, ok := pods.Get("team/added")
		return ok && p.Metadata.Annotations["iotfabric.io/ip"] == "10.0.0.9"
	})
	// The client's own merge patch, with the UID precondition.
	if err := c.MergePatchPod(ctx, "team", "added", []byte(`{"metadata":{"uid":"`+string(added.UID)+`","annotations":{"k":"v"}}}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pods, "patched annotation", 20*time.Second, func() bool {
		p, ok := pods.Get("team/added")
		return ok && p.Metadata.Annotations["k"] == "v"
	})
	// (The API server answers 422 Invalid: metadata.uid is immutable.)
	if err := c.MergePatchPod(ctx, "team", "added", []byte(`{"metadata":{"uid":"not-it","annotations":{"k":"w"}}}`)); !IsInvalid(err) {
		t.Fatalf("patch with another UID: %v, want it refused as invalid", err)
	}
	// Delete.
	if err := kc.CoreV1().Pods("team").Delete(ctx, "added", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pods, "deleted pod", 20*time.Second, func() bool { _, ok := pods.Get("team/added"); return !ok })
	if pods.Len() != 1 {
		t.Fatalf("%d pods cached after the delete, want 1", pods.Len())
	}
	// Namespaces.
	if _, err := kc.CoreV1().Namespaces().Patch(ctx, "team", "application/merge-patch+json",
		[]byte(`{"metadata":{"annotations":{"iotfabric.io/network":"red"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, nss, "namespace annotation", 20*time.Second, func() bool {
		n, ok := nss.Get("team")
		return ok && n.Metadata.Annotations["iotfabric.io/network"] == "red"
	})

	// GET, 404, Events.
	if p, err := c.GetPod(ctx, "team", "before"); err != nil || p.Spec.NodeName != "node-1" {
		t.Fatalf("GET: %+v %v", p, err)
	}
	if _, err := c.GetPod(ctx, "team", "nobody"); !IsNotFound(err) {
		t.Fatalf("GET of a missing pod: %v", err)
	} else if !strings.Contains(err.Error(), `pods "nobody" not found`) {
		t.Fatalf("error text: %v", err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	if err := c.CreateEvent(ctx, &Event{Metadata: ObjectMeta{GenerateName: "before.", Namespace: "team"},
		InvolvedObject: ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: "team", Name: "before"},
		Reason:         "Test", Message: "hello", Type: EventTypeWarning, Source: EventSource{Component: "test", Host: "node-1"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1}); err != nil {
		t.Fatal(err)
	}
	evs, err := kc.CoreV1().Events("team").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=before"})
	if err != nil || len(evs.Items) != 1 || evs.Items[0].Message != "hello" || evs.Items[0].Type != "Warning" || evs.Items[0].FirstTimestamp.IsZero() {
		t.Fatalf("events: %+v %v", evs, err)
	}
}

// TestInformerPages: a list longer than a page is read whole.
func TestInformerPages(t *testing.T) {
	s, kc := startAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 1200 {
		if _, err := kc.CoreV1().Namespaces().Create(ctx, kubetest.Namespace("ns-"+strings.Repeat("x", i%3)+strconv.Itoa(i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(*configFor(t, s, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	nss := NewNamespaceInformer(c, InformerOptions{})
	runInformer(t, nss)
	waitFor(t, nss, "namespaces synced", 60*time.Second, nss.Synced)
	if n := nss.Len(); n < 1200 || n > 1210 {
		t.Fatalf("%d namespaces cached, want 1,200 and the system's", n)
	}
}

// TestWatchExpired: an API server restarted starts its watch cache anew and
// answers a watch from an older resource version with 410 Gone (reason
// Expired); the informer lists again and sees what changed meanwhile.
func TestWatchExpired(t *testing.T) {
	s, kc := startAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := New(*configFor(t, s, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	mkPod(t, ctx, kc, "default", "a", "node-1", nil)
	pods := NewPodInformer(c, InformerOptions{FieldSelector: "spec.nodeName=node-1"})
	runInformer(t, pods)
	waitFor(t, pods, "synced", 30*time.Second, pods.Synced)
	lists := pods.Lists()
	// Writes the informer does not see move the store's revision on.
	for i := range 20 {
		mkPod(t, ctx, kc, "default", "other-"+strconv.Itoa(i), "node-2", nil)
	}
	s.Stop()
	s.Restart(t)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	probe := NewPodInformer(c, InformerOptions{FieldSelector: "spec.nodeName=node-1"})
	_, _, err = probe.watch(wctx, "1")
	wcancel()
	if !IsGone(err) {
		t.Fatalf("watch from resource version 1 after the restart: %v, want 410 Gone", err)
	}
	t.Logf("watch from 1: %v", err)
	mkPod(t, ctx, kc, "default", "b", "node-1", nil)
	if err := kc.CoreV1().Pods("default").Delete(ctx, "a", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pods, "changes after the restart", 60*time.Second, func() bool {
		_, a := pods.Get("default/a")
		_, b := pods.Get("default/b")
		return !a && b
	})
	t.Logf("lists %d -> %d, expired %d", lists, pods.Lists(), pods.Expired())
	if pods.Expired() == 0 || pods.Lists() == lists {
		t.Fatalf("no 410 and new list after the restart (lists %d -> %d, expired %d)", lists, pods.Lists(), pods.Expired())
	}
}

// TestTokenRotation: the token file is read again when it changes; an
// informer whose first token is revoked (the API server restarted without
// it) goes on with the rotated one.
func TestTokenRotation(t *testing.T) {
	alice := kubetest.User{Name: "alice", Groups: []string{"system:masters"}}
	bob := kubetest.User{Name: "bob", Groups: []string{"system:masters"}}
	s, kc := startAPI(t, alice, bob)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := configFor(t, s, "alice")
	c, err := New(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	whoami := func() (string, error) {
		var r struct {
			Status struct {
				UserInfo struct {
					Username string `json:"username"`
				} `json:"userInfo"`
			} `json:"status"`
		}
		err := c.Do(ctx, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
			map[string]string{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, &r)
		return r.Status.UserInfo.Username, err
	}
	if u, err := whoami(); err != nil || u != "alice" {
		t.Fatalf("whoami: %q %v", u, err)
	}
	writeToken(t, cfg.TokenFile, "not-a-token")
	if _, err := whoami(); !IsUnauthorized(err) {
		t.Fatalf("with a bad token: %v, want 401", err)
	}
	writeToken(t, cfg.TokenFile, s.Config(t, "bob").BearerToken)
	if u, err := whoami(); err != nil || u != "bob" {
		t.Fatalf("whoami after the rotation: %q %v", u, err)
	}

	// A running informer: alice's token, then bob's, and alice revoked.
	writeToken(t, cfg.TokenFile, s.Config(t, "alice").BearerToken)
	pods := NewPodInformer(c, InformerOptions{FieldSelector: "spec.nodeName=node-1"})
	runInformer(t, pods)
	waitFor(t, pods, "synced", 30*time.Second, pods.Synced)
	writeToken(t, cfg.TokenFile, s.Config(t, "bob").BearerToken)
	tokens := filepath.Join(s.Dir, "tokens.csv")
	b, err := os.ReadFile(tokens)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(l, s.Config(t, "alice").BearerToken+",") {
			keep = append(keep, l)
		}
	}
	if err := os.WriteFile(tokens, []byte(strings.Join(keep, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Restart(t)
	mkPod(t, ctx, kc, "default", "after-rotation", "node-1", nil)
	waitFor(t, pods, "pod created after the rotation", 60*time.Second, func() bool { _, ok := pods.Get("default/after-rotation"); return ok })
	alic := *cfg
	alic.TokenFile, alic.Token = "", s.Config(t, "alice").BearerToken
	ca, err := New(alic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.GetPod(ctx, "default", "after-rotation"); !IsUnauthorized(err) {
		t.Fatalf("alice's token after the restart: %v, want 401 (revoked)", err)
	}
}

// TestOversizedRefused: an object larger than MaxObjectBytes is refused
// with a TooLargeError that says so, by GET, in a list and in a watch; the
// informer comes back once the object is small again.
func TestOversizedRefused(t *testing.T) {
	s, kc := startAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := configFor(t, s, "admin")
	cfg.MaxObjectBytes = 16 << 10
	c, err := New(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	mkPod(t, ctx, kc, "default", "small", "node-1", nil)
	pods := NewPodInformer(c, InformerOptions{FieldSelector: "spec.nodeName=node-1"})
	runInformer(t, pods)
	waitFor(t, pods, "synced", 30*time.Second, pods.Synced)

	big := strings.Repeat("x", 32<<10)
	mkPod(t, ctx, kc, "default", "big", "node-1", map[string]string{"big": big})
	var tl *TooLargeError
	_, err = c.GetPod(ctx, "default", "big")
	if !errors.As(err, &tl) || tl.Limit != 16<<10 || !strings.Contains(err.Error(), "larger than 16384 bytes") {
		t.Fatalf("GET of a 32 KiB pod with a 16 KiB bound: %v", err)
	}
	t.Logf("GET: %v", err)
	waitFor(t, pods, "the watch refuses the event", 30*time.Second, func() bool { return errors.As(pods.Err(), &tl) })
	t.Logf("informer: %v", pods.Err())
	if _, ok := pods.Get("default/big"); ok {
		t.Fatal("the oversized pod is in the cache")
	}
	// The list refuses it too (the informer lists again after the refusal).
	lists := pods.Lists()
	waitFor(t, pods, "a list refused", 30*time.Second, func() bool {
		return pods.Lists() > lists && errors.As(pods.Err(), &tl) && strings.Contains(pods.Err().Error(), "object in the list of pods")
	})
	// Small again: back in the cache, no error.
	if _, err := kc.CoreV1().Pods("default").Patch(ctx, "big", "application/merge-patch+json",
		[]byte(`{"metadata":{"annotations":{"big":"small now"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pods, "recovered", 60*time.Second, func() bool {
		p, ok := pods.Get("default/big")
		return ok && p.Metadata.Annotations["big"] == "small now" && pods.Err() == nil
	})
}

// TestInClusterConfig: the service account's directory and environment
// reach the API server, its certificate verified with the CA file.
func TestInClusterConfig(t *testing.T) {
	s, _ := startAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	writeToken(t, filepath.Join(dir, "token"), s.Config(t, "admin").BearerToken)
	// kube-apiserver's self-signed certificate holds its own CA.
	ca, err := os.ReadFile(filepath.Join(s.Dir, "certs", "apiserver.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(s.URL)
	env := map[string]string{EnvServiceHost: u.Hostname(), EnvServicePort: u.Port()}
	cfg, err := InClusterFrom(dir, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetNamespace(ctx, "default"); err != nil {
		t.Fatalf("in-cluster GET: %v", err)
	}
	// Another CA: the server's certificate is refused.
	other := *cfg
	other.CAFile, other.CAData = "", selfSignedPEM(t)
	c2, err := New(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.GetNamespace(ctx, "default"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("with another CA: %v, want a certificate error", err)
	}
	if _, err := InClusterFrom(dir, func(string) string { return "" }); !errors.Is(err, ErrNotInCluster) {
		t.Fatalf("outside a pod: %v", err)
	}
}
