// Package kubernetes holds the manifests that install iotfabric on a
// Kubernetes cluster; its test checks them against a real API server.
package kubernetes

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/iotfabric/iotfabric/internal/kubetest"
)

// TestManifestsDryRun: every manifest passes `kubectl apply --dry-run=server`.
func TestManifestsDryRun(t *testing.T) {
	s := kubetest.Start(t)
	// The namespace and the CRD must exist for the others to be checked.
	for _, f := range []string{"namespace.yaml", "crd-virtualnetwork.yaml"} {
		if out, err := s.RunKubectl("apply", "-f", f); err != nil {
			t.Fatalf("%s: %v\n%s", f, err, out)
		}
	}
	if out, err := s.RunKubectl("wait", "--for=condition=established", "--timeout=60s", "crd/virtualnetworks.iotfabric.io"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	files, _ := filepath.Glob("*.yaml")
	if len(files) < 7 {
		t.Fatalf("manifests: %v", files)
	}
	for _, f := range files {
		out, err := s.RunKubectl("apply", "--dry-run=server", "-f", f)
		if err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
			continue
		}
		t.Logf("%s: %s", f, strings.TrimSpace(out))
	}
	// A wrong manifest is refused, so the check can fail.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: iotfabric.io/v1\nkind: VirtualNetwork\nmetadata: {name: x}\nspec: {encapsulations: [ipsec]}\n"), 0o644)
	if out, err := s.RunKubectl("apply", "--dry-run=server", "-f", bad); err == nil {
		t.Errorf("an unknown encapsulation passed: %s", out)
	}
}

// TestRBAC: every rule the controller and the agent need is allowed to their
// service accounts, and a few they must not have are refused.
func TestRBAC(t *testing.T) {
	s := kubetest.Start(t)
	for _, f := range []string{"namespace.yaml", "rbac.yaml"} {
		if out, err := s.RunKubectl("apply", "-f", f); err != nil {
			t.Fatalf("%s: %v\n%s", f, err, out)
		}
	}
	c := s.Client(t, "admin")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	check := func(sa string, r accessRule) bool {
		t.Helper()
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:iotfabric-system:" + sa,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:iotfabric-system", "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Group: r.group, Resource: r.resource, Verb: r.verb, Namespace: r.ns},
		}}
		out, err := c.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return out.Status.Allowed
	}
	cases := []struct {
		sa      string
		allowed []accessRule
		denied  []accessRule
	}{
		{"iotfabric-controller",
			append(expand("iotfabric.io", "virtualnetworks", "", "get", "list", "watch", "create", "update", "delete"),
				slices.Concat(
					expand("iotfabric.io", "virtualnetworks/status", "", "update"),
					expand("", "namespaces", "", "get", "list", "watch"),
					expand("", "nodes", "", "get", "list", "watch"),
					expand("", "pods", "", "get", "list", "watch"),
					expand("", "events", "default", "create", "patch"),
					expand("coordination.k8s.io", "leases", "iotfabric-system", "get", "create", "update"))...),
			slices.Concat(
				expand("", "pods", "default", "delete", "patch", "create"),
				expand("", "secrets", "", "get", "list"),
				expand("", "nodes", "", "delete", "update"),
				expand("coordination.k8s.io", "leases", "kube-system", "update"))},
		{"iotfabric-agent",
			slices.Concat(
				expand("", "pods", "", "get", "list", "watch"),
				expand("", "pods", "team", "patch"),
				expand("", "namespaces", "", "get", "list", "watch"),
				expand("", "events", "team", "create")),
			slices.Concat(
				expand("", "pods", "team", "delete", "create", "update"),
				expand("", "events", "team", "get", "list", "watch", "patch", "update", "delete"),
				expand("events.k8s.io", "events", "team", "create"),
				expand("", "secrets", "", "get", "list"),
				expand("", "nodes", "", "update", "delete"),
				expand("iotfabric.io", "virtualnetworks", "", "create", "update", "delete"),
				expand("coordination.k8s.io", "leases", "iotfabric-system", "update"))},
	}
	for _, cs := range cases {
		for _, r := range cs.allowed {
			if !check(cs.sa, r) {
				t.Errorf("%s: %s %s/%s in %q refused", cs.sa, r.verb, r.group, r.resource, r.ns)
			}
		}
		for _, r := range cs.denied {
			if check(cs.sa, r) {
				t.Errorf("%s: %s %s/%s in %q allowed", cs.sa, r.verb, r.group, r.resource, r.ns)
			}
		}
	}
}

type accessRule struct{ group, resource, verb, ns string }

func expand(group, resource, ns string, verbs ...string) []accessRule {
	var out []accessRule
	for _, v := range verbs {
		out = append(out, accessRule{group, resource, v, ns})
	}
	return out
}
