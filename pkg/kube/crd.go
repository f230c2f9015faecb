package kube

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// VirtualNetworks is the resource of the VirtualNetwork CRD
// (deploy/kubernetes/crd-virtualnetwork.yaml).
var VirtualNetworks = schema.GroupVersionResource{Group: "iotfabric.io", Version: "v1", Resource: "virtualnetworks"}

// VirtualNetworkKind is the CRD's kind.
const VirtualNetworkKind = "VirtualNetwork"

// specOf converts a VirtualNetwork object's spec to the network it asks for.
// Names and values are checked by the controller (CreateNetwork), the
// encapsulation names here.
func specOf(u *unstructured.Unstructured) (*v1.VirtualNetwork, error) {
	n := &v1.VirtualNetwork{Name: u.GetName()}
	var err error
	strs := func(field string) []string {
		if err != nil {
			return nil
		}
		var v []string
		v, _, err = unstructured.NestedStringSlice(u.Object, "spec", field)
		if err != nil {
			err = fmt.Errorf("spec.%s: %w", field, err)
		}
		return v
	}
	n.Subnets = strs("subnets")
	n.ImportRouteTargets = strs("importRouteTargets")
	n.ExportRouteTargets = strs("exportRouteTargets")
	encaps := strs("encapsulations")
	if err != nil {
		return nil, err
	}
	if len(encaps) > 0 {
		if n.Encapsulations, err = model.ParseEncaps(strings.Join(encaps, ",")); err != nil {
			return nil, fmt.Errorf("spec.encapsulations: %w", err)
		}
	}
	for field, dst := range map[string]*uint32{"ipv4BlockSize": &n.Ipv4BlockSize, "ipv6BlockSize": &n.Ipv6BlockSize} {
		v, _, e := unstructured.NestedInt64(u.Object, "spec", field)
		if e != nil || v < 0 || v > 128 {
			return nil, fmt.Errorf("spec.%s: want a prefix length", field)
		}
		*dst = uint32(v)
	}
	return n, nil
}

// setSpec writes n's user-settable fields as the object's spec.
func setSpec(u *unstructured.Unstructured, n *v1.VirtualNetwork) {
	spec := map[string]any{}
	list := func(field string, v []string) {
		if len(v) > 0 {
			spec[field] = toAny(v)
		}
	}
	list("subnets", n.Subnets)
	list("importRouteTargets", n.ImportRouteTargets)
	list("exportRouteTargets", n.ExportRouteTargets)
	if len(n.Encapsulations) > 0 {
		list("encapsulations", strings.Split(model.FormatEncaps(n.Encapsulations), ","))
	}
	if n.Ipv4BlockSize != 0 {
		spec["ipv4BlockSize"] = int64(n.Ipv4BlockSize)
	}
	if n.Ipv6BlockSize != 0 {
		spec["ipv6BlockSize"] = int64(n.Ipv6BlockSize)
	}
	u.Object["spec"] = spec
}

func toAny(v []string) []any {
	out := make([]any, len(v))
	for i, s := range v {
		out[i] = s
	}
	return out
}

// sameSpec reports whether the network in the store (normalised by the
// controller) is what the object's spec asks for, defaults applied.
func sameSpec(want, have *v1.VirtualNetwork) bool {
	eqStrings := func(a, b []string) bool {
		a, b = slices.Clone(a), slices.Clone(b)
		slices.Sort(a)
		slices.Sort(b)
		return slices.Equal(a, b)
	}
	norm := func(rts []string) []string {
		out := make([]string, 0, len(rts))
		for _, s := range rts {
			if rt, err := model.ParseRouteTarget(strings.TrimSpace(s)); err == nil {
				out = append(out, rt.String())
			} else {
				out = append(out, s)
			}
		}
		return out
	}
	subnets := func(ss []string) []string {
		out := make([]string, 0, len(ss))
		for _, s := range ss {
			out = append(out, canonicalPrefix(s))
		}
		return out
	}
	encaps := want.Encapsulations
	if len(encaps) == 0 {
		encaps = model.DefaultEncapsulations
	}
	return eqStrings(subnets(want.Subnets), subnets(have.Subnets)) &&
		eqStrings(norm(want.ImportRouteTargets), norm(have.ImportRouteTargets)) &&
		eqStrings(norm(want.ExportRouteTargets), norm(have.ExportRouteTargets)) &&
		slices.Equal(encaps, have.Encapsulations) &&
		(want.Ipv4BlockSize == 0 || want.Ipv4BlockSize == have.Ipv4BlockSize) &&
		(want.Ipv6BlockSize == 0 || want.Ipv6BlockSize == have.Ipv6BlockSize)
}
