package api

import (
	"context"
	"errors"
	"time"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// enrollment is the EnrollmentService over pkg/enroll.
type enrollment struct {
	v1.UnimplementedEnrollmentServiceServer
	e *enroll.Enroller
	c *controller.Controller
}

func certResponse(is enroll.Issued) *v1.CertificateResponse {
	return &v1.CertificateResponse{Certificate: is.Cert.Raw, Ca: is.CA.Raw, Identity: is.Identity.String(), NotAfterUnix: is.Cert.NotAfter.Unix()}
}

func (s *enrollment) Join(ctx context.Context, req *v1.JoinRequest) (*v1.CertificateResponse, error) {
	is, err := s.e.Join(ctx, req.GetToken(), req.GetCsr())
	if err != nil {
		return nil, Status(err)
	}
	return certResponse(is), nil
}

func (s *enrollment) Renew(ctx context.Context, req *v1.RenewRequest) (*v1.CertificateResponse, error) {
	cert := certFrom(ctx)
	if cert == nil {
		return nil, Status(model.Errorf(model.ErrUnauthenticated, "renew needs the client certificate to renew (mutual TLS)"))
	}
	is, err := s.e.Renew(ctx, cert, req.GetCsr())
	if err != nil {
		return nil, Status(err)
	}
	return certResponse(is), nil
}

var tokenKinds = map[v1.TokenKind]enroll.Kind{v1.TokenKind_TOKEN_KIND_GATEWAY: enroll.KindGateway, v1.TokenKind_TOKEN_KIND_USER: enroll.KindUser}

func tokenToAPI(t enroll.TokenInfo) *v1.Token {
	k := v1.TokenKind_TOKEN_KIND_GATEWAY
	if t.Kind == enroll.KindUser {
		k = v1.TokenKind_TOKEN_KIND_USER
	}
	return &v1.Token{Id: t.ID, Kind: k, Name: t.Name, Role: t.Role, CreatedUnix: t.Created.Unix(), ExpiresUnix: t.Expires.Unix()}
}

func (s *enrollment) CreateToken(ctx context.Context, req *v1.CreateTokenRequest) (*v1.CreateTokenResponse, error) {
	if err := s.e.NeedCA(); err != nil {
		return nil, Status(err) // a token could not be used: say so now rather than at the join
	}
	kind, ok := tokenKinds[req.GetKind()]
	if !ok {
		return nil, Status(model.Errorf(model.ErrInvalid, "token kind %v: want TOKEN_KIND_GATEWAY or TOKEN_KIND_USER", req.GetKind()))
	}
	tok, info, err := s.e.CreateToken(ctx, kind, req.GetName(), req.GetRole(), time.Duration(req.GetTtlSeconds())*time.Second)
	if err != nil {
		return nil, Status(err)
	}
	return &v1.CreateTokenResponse{Token: tok, Info: tokenToAPI(info), CaFingerprint: enroll.Fingerprint(s.e.CA().Certificate())}, nil
}

func (s *enrollment) ListTokens(ctx context.Context, _ *v1.ListTokensRequest) (*v1.ListTokensResponse, error) {
	ts, err := s.e.ListTokens(ctx)
	if err != nil {
		return nil, Status(err)
	}
	resp := &v1.ListTokensResponse{}
	for _, t := range ts {
		resp.Tokens = append(resp.Tokens, tokenToAPI(t))
	}
	return resp, nil
}

func (s *enrollment) DeleteToken(ctx context.Context, req *v1.DeleteTokenRequest) (*v1.DeleteResponse, error) {
	if err := s.e.DeleteToken(ctx, req.GetId()); err != nil {
		return nil, Status(err)
	}
	return &v1.DeleteResponse{}, nil
}

// RevokeGateway revokes the gateway's certificates; with purge, a full sync
// of no endpoints on its behalf deletes its endpoints.
func (s *enrollment) RevokeGateway(ctx context.Context, req *v1.RevokeGatewayRequest) (*v1.RevokeGatewayResponse, error) {
	gw := req.GetGateway()
	if gw == "" {
		return nil, Status(model.Errorf(model.ErrInvalid, "gateway name is empty"))
	}
	id := tlsconfig.Identity{Role: tlsconfig.RoleGateway, Gateway: gw}
	serials, err := s.e.Revoke(ctx, id.String())
	if err != nil {
		return nil, Status(err)
	}
	resp := &v1.RevokeGatewayResponse{Serials: serials}
	if req.GetPurge() {
		_, deleted, err := s.c.ReportEndpoints(ctx, gw, nil, true, nil)
		if err != nil && !errors.Is(err, model.ErrNotFound) { // no gateway: no endpoints
			return nil, Status(err)
		}
		resp.EndpointsDeleted = int32(deleted)
	}
	return resp, nil
}

func (s *enrollment) ListRevoked(ctx context.Context, _ *v1.ListRevokedRequest) (*v1.ListRevokedResponse, error) {
	rs, err := s.e.ListRevoked(ctx)
	if err != nil {
		return nil, Status(err)
	}
	resp := &v1.ListRevokedResponse{}
	for _, r := range rs {
		resp.Certificates = append(resp.Certificates, &v1.RevokedCertificate{Serial: r.Serial, Identity: r.Identity, RevokedUnix: r.Revoked.Unix(), NotAfterUnix: r.NotAfter.Unix()})
	}
	return resp, nil
}
