package tlsconfig

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
)

func TestIdentityOf(t *testing.T) {
	for _, c := range []struct {
		cn   string
		orgs []string
		want Identity
	}{
		{"alice", []string{OrgAdmins}, Identity{Role: RoleAdmin, Name: "alice"}},
		{"victor", []string{"acme", OrgViewers}, Identity{Role: RoleViewer, Name: "victor"}},
		{"gateway:gw-1", []string{OrgGateways}, Identity{Role: RoleGateway, Gateway: "gw-1", Name: "gateway:gw-1"}},
		{"gw-1", []string{OrgGateways}, Identity{Name: "gw-1"}},                                // no gateway: prefix
		{"gateway:", []string{OrgGateways}, Identity{Name: "gateway:"}},                        // no name
		{"gateway:gw-1", nil, Identity{Name: "gateway:gw-1"}},                                  // no organization
		{"mallory", []string{OrgAdmins, OrgGateways}, Identity{Name: "mallory"}},               // ambiguous
		{"mallory", []string{"iotfabric:Admins", "system:masters"}, Identity{Name: "mallory"}}, // exact names only
	} {
		got := IdentityOf(&x509.Certificate{Subject: pkix.Name{CommonName: c.cn, Organization: c.orgs}})
		if got != c.want {
			t.Errorf("CN=%s O=%v: %+v, want %+v", c.cn, c.orgs, got, c.want)
		}
	}
	for _, id := range []Identity{{Role: RoleAdmin, Name: "a"}, {Role: RoleViewer, Name: "v"}, {Role: RoleGateway, Gateway: "gw-9", Name: "gateway:gw-9"}} {
		if got := IdentityOf(&x509.Certificate{Subject: id.Subject()}); got != id {
			t.Errorf("%+v encodes to %+v", id, got)
		}
	}
}
