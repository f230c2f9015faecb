package kube

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// elect runs leader elections on the Lease until ctx ends; lead runs while
// this controller holds it, with a context that ends when it loses it. A
// controller that stops releases the lease, one that is killed loses it
// after the lease duration.
func (r *Reconciler) elect(ctx context.Context, lead func(context.Context)) error {
	l := r.cfg.Lease
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: l.Namespace, Name: l.Name},
		Client:     r.kc.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: l.Duration, RenewDeadline: l.Renew, RetryPeriod: l.Retry,
			ReleaseOnCancel: true, Name: l.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					r.log.Info("leading: acting on Kubernetes", logkey.Identity, l.Identity)
					lead(ctx)
				},
				OnStoppedLeading: func() { r.log.Info("not leading", logkey.Identity, l.Identity) },
				OnNewLeader: func(id string) {
					if id != l.Identity {
						r.log.Info("another controller leads", logkey.Leader, id)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		le.Run(ctx) // returns when the lease is lost or ctx ends
	}
	return nil
}

func defaultIdentity() string {
	h, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return h + "-" + hex.EncodeToString(b)
}

// restConfig loads a kubeconfig file, or the in-cluster configuration.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes: no kubeconfig given and not in a cluster: %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}

// metaSlim keeps an object's identity only.
func metaSlim(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
}
