// Package kubelite is the vrouter agent's Kubernetes client: plain net/http
// and encoding/json against the API server, for the few calls the agent
// makes, so that the gateway binary does not link client-go's typed
// clientset, informers and scheme (docs/kubernetes.md, "The agent's
// client").
//
// It has:
//   - Config: the API server, its CA, and a bearer token (a token file is
//     read again when it changes: the kubelet rotates projected service
//     account tokens) or a client certificate (files read again too);
//     InCluster for a pod, LoadKubeconfig for a kubeconfig file (the current
//     context's server, CA, token, tokenFile, client certificate and key;
//     exec and auth-provider plugins, basic authentication and impersonation
//     are refused with ErrUnsupportedKubeconfig);
//   - Client: GET of a pod or a namespace, a JSON merge patch of a pod,
//     creation of a core/v1 Event, and Do for anything else; refusals are
//     *StatusError (IsNotFound, IsConflict, IsInvalid, IsGone);
//   - Informer: a cache of pods (a field selector such as
//     spec.nodeName=NODE) or namespaces, reduced to the fields the agent
//     reads (Pod, Namespace): LIST in pages, then WATCH from the list's
//     resource version with bookmarks; a new LIST after 410 Gone; a bounded
//     backoff with jitter after any other failure.
//
// Every object, watch event and answer is decoded from the stream with a
// bound (Config.MaxObjectBytes, default 2 MiB, above what etcd stores): a
// larger one is refused with a *TooLargeError before it is read whole.
// Contexts bound every call; an Informer stops when its context ends.
package kubelite
