package kubelite

import "encoding/json"

// ObjectMeta is the part of a Kubernetes object's metadata the agent reads.
type ObjectMeta struct {
	Name            string            `json:"name,omitempty"`
	GenerateName    string            `json:"generateName,omitempty"`
	Namespace       string            `json:"namespace,omitempty"`
	UID             string            `json:"uid,omitempty"`
	ResourceVersion string            `json:"resourceVersion,omitempty"`
	Annotations     map[string]string `json:"annotations,omitempty"`
}

// Key is the object's cache key: namespace/name, or name for cluster-scoped
// objects (as client-go's MetaNamespaceKeyFunc).
func (m *ObjectMeta) Key() string {
	if m.Namespace == "" {
		return m.Name
	}
	return m.Namespace + "/" + m.Name
}

// Pod is a core/v1 Pod, reduced to what the agent uses: its identity, its
// annotations and the node it is bound to.
type Pod struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     PodSpec    `json:"spec"`
}

// PodSpec is the part of a pod's spec the agent reads.
type PodSpec struct {
	NodeName string `json:"nodeName,omitempty"`
}

// Meta returns the pod's metadata.
func (p *Pod) Meta() *ObjectMeta { return &p.Metadata }

// Namespace is a core/v1 Namespace, reduced to its identity and annotations.
type Namespace struct {
	Metadata ObjectMeta `json:"metadata"`
}

// Meta returns the namespace's metadata.
func (n *Namespace) Meta() *ObjectMeta { return &n.Metadata }

// Object is what an Informer caches.
type Object interface {
	*Pod | *Namespace
	Meta() *ObjectMeta
}

// Event is a core/v1 Event as the agent creates it.
type Event struct {
	APIVersion     string          `json:"apiVersion"`
	Kind           string          `json:"kind"`
	Metadata       ObjectMeta      `json:"metadata"`
	InvolvedObject ObjectReference `json:"involvedObject"`
	Reason         string          `json:"reason,omitempty"`
	Message        string          `json:"message,omitempty"`
	Type           string          `json:"type,omitempty"`
	Source         EventSource     `json:"source,omitempty"`
	// FirstTimestamp and LastTimestamp are RFC 3339 times in UTC, in seconds.
	FirstTimestamp string `json:"firstTimestamp,omitempty"`
	LastTimestamp  string `json:"lastTimestamp,omitempty"`
	Count          int32  `json:"count,omitempty"`
}

// EventTypeWarning is the type of an Event about something that went wrong.
const EventTypeWarning = "Warning"

// ObjectReference names the object an Event is about.
type ObjectReference struct {
	Kind       string `json:"kind,omitempty"`
	APIVersion string `json:"apiVersion,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name,omitempty"`
	UID        string `json:"uid,omitempty"`
}

// EventSource names the component that wrote an Event.
type EventSource struct {
	Component string `json:"component,omitempty"`
	Host      string `json:"host,omitempty"`
}

// listMeta is a list's metadata.
type listMeta struct {
	ResourceVersion string `json:"resourceVersion,omitempty"`
	Continue        string `json:"continue,omitempty"`
}

// watchEvent is one event of a watch stream; Object is decoded once Type
// is known (an ERROR event carries a Status, the others the object).
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// Watch event types.
const (
	eventAdded    = "ADDED"
	eventModified = "MODIFIED"
	eventDeleted  = "DELETED"
	eventBookmark = "BOOKMARK"
	eventError    = "ERROR"
)
