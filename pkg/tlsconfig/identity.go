package tlsconfig

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
)

// Role is what the holder of a client certificate may do at the controller's
// API (the table of methods per role is pkg/api's).
type Role uint8

const (
	// RoleNone: a verified certificate that names no role; it may call
	// nothing but the health check.
	RoleNone Role = iota
	// RoleViewer may call every read method (get, list, watch).
	RoleViewer
	// RoleAdmin may call every method.
	RoleAdmin
	// RoleGateway is one gateway's vrouter agent: the agent methods, for its
	// own gateway only.
	RoleGateway
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleAdmin:
		return "admin"
	case RoleGateway:
		return "gateway"
	default:
		return "none"
	}
}

// The encoding of identities in client certificates, after Kubernetes'
// system:nodes / system:node:<name>: the subject's Organization (O) gives
// the role; a gateway's Common Name (CN) is GatewayPrefix followed by the
// gateway's name.
const (
	OrgAdmins   = "iotfabric:admins"
	OrgViewers  = "iotfabric:viewers"
	OrgGateways = "iotfabric:gateways"
	// GatewayPrefix starts the Common Name of a gateway's certificate.
	GatewayPrefix = "gateway:"
)

// Identity is who a client is: its role, and for RoleGateway the gateway.
type Identity struct {
	Role    Role
	Gateway string // the gateway's name (RoleGateway only)
	Name    string // the certificate's Common Name, for the logs
}

// Admin is the identity of a caller that is trusted with everything (a local
// operator on a loopback listener without TLS).
var Admin = Identity{Role: RoleAdmin, Name: "local"}

func (id Identity) String() string {
	switch id.Role {
	case RoleGateway:
		return "gateway:" + id.Gateway
	case RoleNone:
		if id.Name == "" {
			return "anonymous"
		}
		return "none:" + id.Name
	default:
		return id.Role.String() + ":" + id.Name
	}
}

// IdentityOf reads the identity a verified client certificate encodes:
//
//	O=iotfabric:admins                       admin
//	O=iotfabric:viewers                      viewer
//	O=iotfabric:gateways, CN=gateway:<name>  the gateway <name>
//
// A certificate with none of these organizations, with more than one of them,
// or in iotfabric:gateways without a CN gateway:<name>, has no role.
func IdentityOf(cert *x509.Certificate) Identity {
	id := Identity{Name: cert.Subject.CommonName}
	n := 0
	for _, o := range cert.Subject.Organization {
		switch o {
		case OrgAdmins:
			id.Role, n = RoleAdmin, n+1
		case OrgViewers:
			id.Role, n = RoleViewer, n+1
		case OrgGateways:
			id.Role, n = RoleGateway, n+1
		}
	}
	if n != 1 {
		return Identity{Name: id.Name} // none, or ambiguous
	}
	if id.Role == RoleGateway {
		name, ok := strings.CutPrefix(id.Name, GatewayPrefix)
		if !ok || name == "" {
			return Identity{Name: id.Name}
		}
		id.Gateway = name
	}
	return id
}

// Subject is the certificate subject that encodes id (for RoleGateway, the
// Common Name is gateway:<id.Gateway>; else id.Name).
func (id Identity) Subject() pkix.Name {
	s := pkix.Name{CommonName: id.Name}
	switch id.Role {
	case RoleAdmin:
		s.Organization = []string{OrgAdmins}
	case RoleViewer:
		s.Organization = []string{OrgViewers}
	case RoleGateway:
		s.Organization, s.CommonName = []string{OrgGateways}, GatewayPrefix+id.Gateway
	}
	return s
}
