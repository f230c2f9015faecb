package kubetest

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStartStopRestart: the API server serves, survives a stop and a restart
// with its state (etcd keeps running), and kubectl talks to it.
func TestStartStopRestart(t *testing.T) {
	s := Start(t, User{Name: "alice", Groups: []string{"team"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := s.Client(t, "admin")
	if _, err := c.CoreV1().Namespaces().Create(ctx, Namespace("kt"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client(t, "alice").CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("alice without RBAC listed namespaces: %v", err)
	}
	s.Stop()
	if _, err := c.CoreV1().Namespaces().Get(ctx, "kt", metav1.GetOptions{}); err == nil {
		t.Fatal("stopped API server answered")
	}
	s.Restart(t)
	if _, err := c.CoreV1().Namespaces().Get(ctx, "kt", metav1.GetOptions{}); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	out, err := s.RunKubectl("get", "namespace", "kt", "-o", "name")
	if err != nil || strings.TrimSpace(out) != "namespace/kt" {
		t.Fatalf("kubectl: %q %v", out, err)
	}
}
