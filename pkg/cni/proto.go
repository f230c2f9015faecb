// Package cni is the protocol between the iotfabric CNI plugin and the local
// vrouter agent: one JSON request and one JSON response per connection on a
// unix socket that only root can open (mode 0600).
//
// The plugin asks the agent to add an endpoint (the agent picks the network's
// address and an MPLS label and persists them), creates the veth pair itself,
// then tells the agent the endpoint is attached (the agent programs the host
// side and reports the endpoint to the controllers).
package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/validate"
)

// Operations.
const (
	OpAdd    = "add"    // allocate (or return) the endpoint of containerID/ifName
	OpAttach = "attach" // the veth pair exists: program the host side, report it
	OpDel    = "del"    // release the endpoint; succeeds when it is already gone
	OpCheck  = "check"  // return the endpoint as the agent has it
	OpGC     = "gc"     // release every endpoint not in Valid
	OpStatus = "status" // is the agent able to admit pods
)

// MaxMessage bounds a request or a response on the wire.
const MaxMessage = 4 << 20

// Request is what the plugin sends.
type Request struct {
	Op          string `json:"op"`
	ContainerID string `json:"containerID,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	Netns       string `json:"netns,omitempty"`
	// Network chosen by the plugin's configuration ("" with PodNamespace: the
	// agent maps the namespace).
	Network      string `json:"network,omitempty"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	// PodUID is K8S_POD_UID: a pod re-created under the same name has another.
	PodUID string `json:"podUID,omitempty"`
	// MAC of the pod-side interface (attach).
	MAC string `json:"mac,omitempty"`
	// Valid attachments (gc).
	Valid []Attachment `json:"valid,omitempty"`
}

// Attachment names one endpoint as the runtime knows it.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// Endpoint is one pod interface as the agent holds it.
type Endpoint struct {
	ID          string       `json:"id"`
	ContainerID string       `json:"containerID"`
	IfName      string       `json:"ifName"`
	Netns       string       `json:"netns,omitempty"`
	Network     string       `json:"network"`
	Addresses   []netip.Addr `json:"addresses"`
	MAC         string       `json:"mac,omitempty"`
	Label       uint32       `json:"label"`
	// HostIf is the name of the host-side veth.
	HostIf string `json:"hostIf"`
	// Attached is set once the plugin reported the veth pair in place.
	Attached bool `json:"attached,omitempty"`
	// The Kubernetes pod, from the ADD's CNI_ARGS (empty outside Kubernetes).
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodUID       string `json:"podUID,omitempty"`
}

// Response is what the agent answers.
type Response struct {
	Error    *Error    `json:"error,omitempty"`
	Endpoint *Endpoint `json:"endpoint,omitempty"`
	// HostNetns is the namespace the host-side veths live in ("" = the plugin's).
	HostNetns string `json:"hostNetns,omitempty"`
	// Gateway is the address pods route their default through (169.254.1.1).
	Gateway netip.Addr `json:"gateway,omitzero"`
	// Released endpoints (del, gc): the plugin removes their host-side veths.
	Released []Endpoint `json:"released,omitempty"`
	// Kept lists the host-side veths of every endpoint the agent keeps (gc):
	// others with the agent's prefix are leftovers.
	Kept []string `json:"kept,omitempty"`
	// Warning is set when the request succeeded with a caveat (e.g. the data
	// plane not fully programmed yet, or no controller reachable).
	Warning string `json:"warning,omitempty"`
}

// Error is a CNI error: Code is one of the CNI specification's codes.
type Error struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + ": " + e.Details
	}
	return e.Msg
}

// CNI error codes used between agent and plugin (CNI specification 1.1).
const (
	CodeIncompatibleVersion = 1
	CodeUnsupportedField    = 2
	CodeUnknownContainer    = 3
	CodeInvalidEnvironment  = 4
	CodeIOFailure           = 5
	CodeDecodingFailure     = 6
	CodeInvalidNetworkConf  = 7
	CodeTryAgainLater       = 11
	CodeNotAvailable        = 50
	CodeLimitedConnectivity = 51
	CodeInternal            = 999
)

// Errorf returns an *Error with code.
func Errorf(code uint, format string, a ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, a...)}
}

// EndpointID is the id of containerID and ifName at the agent and the
// controller: "<containerID>:<ifName>".
func EndpointID(containerID, ifName string) string { return containerID + ":" + ifName }

// HostIfPrefix starts the name of every host-side veth the plugin creates:
// iotfabric's interface mark "iof" (pkg/overlay.IfPrefix), "e" for endpoint
// (pkg/overlay.EndpointIfPrefix). LegacyHostIfPrefix started them before;
// gateways that upgrade may still have such veths (see docs/cni.md).
const (
	HostIfPrefix       = "iofe"
	LegacyHostIfPrefix = "iotf"
)

// HostIfName is the host-side veth of an endpoint: derived from its id, so a
// retried ADD, a DEL and a GC all find it.
func HostIfName(id string) string {
	h := sha256.Sum256([]byte(id))
	return HostIfPrefix + hex.EncodeToString(h[:])[:11]
}

// LegacyHostIfName is the name HostIfName gave before HostIfPrefix changed.
func LegacyHostIfName(id string) string {
	return LegacyHostIfPrefix + strings.TrimPrefix(HostIfName(id), HostIfPrefix)
}

// DecodeRequest reads and validates one request.
func DecodeRequest(r io.Reader) (*Request, error) {
	var req Request
	dec := json.NewDecoder(io.LimitReader(r, MaxMessage))
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("decode request: %w", err)
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return &req, nil
}

// Validate checks the fields the operation needs.
func (r *Request) Validate() error {
	needID := func() error {
		if _, err := validate.EndpointIDOf(r.ContainerID, r.IfName); err != nil {
			return fmt.Errorf("%s: %w", r.Op, err)
		}
		return nil
	}
	switch r.Op {
	case OpAdd:
		if err := needID(); err != nil {
			return err
		}
		if r.Network == "" && r.PodNamespace == "" {
			return errors.New("add: a network (or the pod's namespace to map) is required")
		}
		if r.Network != "" {
			if err := validate.Name("network", r.Network); err != nil {
				return fmt.Errorf("add: %w", err)
			}
		}
	case OpAttach, OpDel, OpCheck:
		return needID()
	case OpGC, OpStatus:
	default:
		return fmt.Errorf("unknown operation %s", validate.Quote(r.Op))
	}
	return nil
}

// DecodeResponse reads one response.
func DecodeResponse(r io.Reader) (*Response, error) {
	var resp Response
	if err := json.NewDecoder(io.LimitReader(r, MaxMessage)).Decode(&resp); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	if resp.Error != nil && resp.Error.Code == 0 {
		resp.Error.Code = CodeInternal
	}
	return &resp, nil
}
