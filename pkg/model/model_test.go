package model

import (
	"strings"
	"testing"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "sensors-1", "gw_pisek.2", strings.Repeat("x", 63)} {
		if err := ValidateName("network", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for bad, want := range map[string]string{"": "empty", "-x": "position 1", "a b": "' '", strings.Repeat("x", 64): "limit is 63", "é": "not allowed"} {
		if err := ValidateName("network", bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want it to mention %q", bad, err, want)
		}
	}
	if err := ValidateEndpointID("pod:eth0"); err != nil {
		t.Error(err)
	}
}

func TestEncaps(t *testing.T) {
	es, err := ParseEncaps(" MPLSoUDP, mplsogre ")
	if err != nil || len(es) != 2 || es[0] != v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP || FormatEncaps(es) != "mplsoudp,mplsogre" {
		t.Fatalf("%v %v", es, err)
	}
	if _, err := ParseEncaps("mplsoudp,mplsoudp"); err == nil {
		t.Error("repeated encapsulation accepted")
	}
	if _, err := ParseEncaps("ipsec"); err == nil || !strings.Contains(err.Error(), "use mplsoudp") {
		t.Errorf("unknown encapsulation: %v", err)
	}
	if es, err := ParseEncaps(""); err != nil || len(es) != 0 {
		t.Errorf("empty list: %v %v", es, err)
	}
}

func TestRouteTargetsAndLabels(t *testing.T) {
	rt, err := ParseRouteTarget("64512:100")
	if err != nil || rt.String() != "target:64512:100" {
		t.Fatalf("%v %v", rt, err)
	}
	if AutoRouteTarget(64512, 7).String() != "target:64512:8000007" {
		t.Fatal(AutoRouteTarget(64512, 7))
	}
	for _, bad := range []string{"", "target:", "target:x:1", "target:4200000000:70000"} {
		if _, err := ParseRouteTarget(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for l, ok := range map[uint32]bool{0: true, 15: false, 16: true, MaxLabel: true, MaxLabel + 1: false} {
		if (ValidateLabel(l) == nil) != ok {
			t.Errorf("label %d: valid=%v", l, !ok)
		}
	}
	if ValidateMAC("02:00:00:00:00:01") != nil || ValidateMAC("02:00") == nil || ValidateMAC("") != nil {
		t.Error("MAC validation")
	}
}

func FuzzParseEncaps(f *testing.F) {
	for _, s := range []string{"mplsoudp", "mplsoudp,mplsogre", " VXLAN ,", "x", ",,", "mplsogre,mplsogre"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		es, err := ParseEncaps(s)
		if err != nil {
			return
		}
		again, err := ParseEncaps(FormatEncaps(es))
		if err != nil || FormatEncaps(again) != FormatEncaps(es) {
			t.Fatalf("%q -> %v -> %v %v", s, es, again, err)
		}
	})
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "", "-x", "é", "gw.1_2-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateName("network", s) == nil {
			if s == "" || len(s) > 63 || strings.ContainsAny(s, " /\x00") {
				t.Fatalf("%q accepted", s)
			}
		}
	})
}
