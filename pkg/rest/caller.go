package rest

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
)

// callMD is the metadata key by which a call on the in-process gRPC server
// names its caller: a random token that this process made for one HTTP
// request and forgets when the request ends. Only the in-process client sets
// it (overwriting what a request may carry); the external gRPC listener never
// reads it (its Authorizer identifies callers by their TLS connection).
const callMD = "x-iotfabric-rest-call"

// Caller is who makes an HTTP request: the identity of its verified client
// certificate, or the listener's anonymous identity.
type Caller struct {
	Identity tlsconfig.Identity
	// Cert is the verified client certificate (nil: anonymous).
	Cert *x509.Certificate
}

type callerKey struct{}

// CallerFrom returns the caller of the HTTP request whose context ctx is
// (false: none, the request did not pass the REST handler's authentication).
// Handlers mounted through Options.Extra may use it.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(*call)
	if !ok {
		return Caller{}, false
	}
	return c.caller, true
}

// call is one authenticated HTTP request: its caller and its token.
type call struct {
	caller Caller
	token  string
}

// calls are the HTTP requests in progress, by token.
type calls struct {
	mu sync.Mutex
	m  map[string]Caller // guarded by mu
}

// begin registers an HTTP request's caller and returns its context (with
// the call) and the function that ends it.
func (cs *calls) begin(r *http.Request, c Caller) (*http.Request, func()) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	tok := hex.EncodeToString(b[:])
	cs.mu.Lock()
	cs.m[tok] = c
	cs.mu.Unlock()
	ctx := context.WithValue(r.Context(), callerKey{}, &call{caller: c, token: tok})
	return r.WithContext(ctx), func() {
		cs.mu.Lock()
		delete(cs.m, tok)
		cs.mu.Unlock()
	}
}

// identify is the in-process server's Authorizer.Identify: the caller of the
// HTTP request the call's token names; the zero identity (which may call
// nothing but the health check) for an unknown or missing token.
func (cs *calls) identify(ctx context.Context) (tlsconfig.Identity, *x509.Certificate) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(callMD)
	if len(v) != 1 {
		return tlsconfig.Identity{}, nil
	}
	cs.mu.Lock()
	c, ok := cs.m[v[0]]
	cs.mu.Unlock()
	if !ok {
		return tlsconfig.Identity{}, nil
	}
	return c.Identity, c.Cert
}

// withToken puts the token of ctx's HTTP request into the outgoing metadata,
// replacing any value of that key.
func withToken(ctx context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Delete(callMD)
	if c, ok := ctx.Value(callerKey{}).(*call); ok {
		md.Set(callMD, c.token)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

func tokenUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(withToken(ctx), method, req, reply, cc, opts...)
}

func tokenStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(withToken(ctx), desc, cc, method, opts...)
}
