package encap

import (
	"encoding/json"
	"testing"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func TestNamesRoundTrip(t *testing.T) {
	for _, e := range []Encap{MPLSoUDP, MPLSoGRE, VXLAN, Plain} {
		got, err := Parse(e.String())
		if err != nil || got != e {
			t.Errorf("Parse(%q) = %v, %v; want %v", e.String(), got, err, e)
		}
		if _, old := Deprecated(e.String()); old {
			t.Errorf("%q reported deprecated", e.String())
		}
	}
	if MPLSoUDP.String() != "mplsoudp" || MPLSoGRE.String() != "mplsogre" || VXLAN.String() != "vxlan" {
		t.Errorf("names differ from the API's: %v %v %v", MPLSoUDP, MPLSoGRE, VXLAN)
	}
}

func TestDeprecatedSpellings(t *testing.T) {
	for old, want := range map[string]Encap{"mpls-udp": MPLSoUDP, " MPLS-GRE ": MPLSoGRE} {
		e, err := Parse(old)
		if err != nil || e != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", old, e, err, want)
		}
		if use, ok := Deprecated(old); !ok || use != want.String() {
			t.Errorf("Deprecated(%q) = %q, %v; want %q", old, use, ok, want)
		}
	}
	for _, bad := range []string{"", "gre", "udp", "mpls", "unknown", "mplsoudp,mplsogre"} {
		if e, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", bad, e)
		}
	}
}

func TestParseList(t *testing.T) {
	es, old, err := ParseList(" mplsoudp, mpls-gre ,,plain")
	if err != nil || len(es) != 3 || es[0] != MPLSoUDP || es[1] != MPLSoGRE || es[2] != Plain {
		t.Fatalf("ParseList = %v, %v", es, err)
	}
	if len(old) != 1 || old[0] != "mpls-gre" {
		t.Fatalf("deprecated spellings met: %q", old)
	}
	if _, _, err := ParseList("mplsoudp,bogus"); err == nil {
		t.Fatal("ParseList accepted an unknown name")
	}
}

func TestJSON(t *testing.T) {
	var es []Encap
	if err := json.Unmarshal([]byte(`["mplsoudp","mpls-gre"]`), &es); err != nil || len(es) != 2 || es[1] != MPLSoGRE {
		t.Fatalf("unmarshal: %v, %v", es, err)
	}
	b, err := json.Marshal(es)
	if err != nil || string(b) != `["mplsoudp","mplsogre"]` {
		t.Fatalf("marshal: %s, %v", b, err)
	}
	if err := json.Unmarshal([]byte(`["nope"]`), &es); err == nil {
		t.Fatal("unmarshal accepted an unknown name")
	}
	if _, err := json.Marshal([]Encap{Unknown}); err == nil {
		t.Fatal("marshal of Unknown succeeded")
	}
}

func TestAPI(t *testing.T) {
	for _, e := range []Encap{MPLSoUDP, MPLSoGRE, VXLAN} {
		if FromAPI(e.API()) != e {
			t.Errorf("%v: API round trip gives %v", e, FromAPI(e.API()))
		}
	}
	if Plain.API() != v1.Encapsulation_ENCAPSULATION_UNSPECIFIED || FromAPI(v1.Encapsulation(99)) != Unknown {
		t.Error("values the API does not carry are not mapped to unspecified / Unknown")
	}
}
