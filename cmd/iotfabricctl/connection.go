package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
)

// connect returns the connection to the controller, made on first use from the global flags.
func (c *cli) connect() (*grpc.ClientConn, error) {
	if c.conn != nil {
		return c.conn, nil
	}
	if err := c.settle(); err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if c.tls.Enabled() {
		tc, err := tlsconfig.Client(c.tls)
		if err != nil && c.tlsContext != "" { // the config file is wrong, not the command line
			return nil, fmt.Errorf("context %s: %w", c.tlsContext, err)
		}
		if err != nil {
			return nil, usagef("%v", err)
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(c.server, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(model.MaxMsgSize), grpc.MaxCallSendMsgSize(model.MaxMsgSize)))
	if err != nil {
		return nil, fmt.Errorf("controller address %q: %w", c.server, err)
	}
	c.conn = conn
	return conn, nil
}

// settle replaces the global flags' values with the settings resolved from
// the flags given, $IOTFABRIC_SERVER, the config file's context and the defaults.
func (c *cli) settle() error {
	if c.settled {
		return nil
	}
	cf, path := &configFile{}, ""
	if p, err := configPath(); err == nil { // no $HOME and nothing else: no config file
		path = p
		if cf, err = loadConfig(path); err != nil {
			return err
		}
	}
	x, err := selectContext(cf, c.context)
	if err != nil {
		return err
	}
	var g given
	changed := func(name string) bool { return c.flags != nil && c.flags.Changed(name) }
	if changed("server") {
		g.server = c.server
	}
	g.envServer = os.Getenv(serverEnv)
	if changed("timeout") {
		g.timeout = c.timeout
	}
	g.tls = c.tls
	s := resolve(g, x, filepath.Dir(path))
	c.server, c.timeout, c.tls, c.tlsContext = s.server, s.timeout, s.tls, s.tlsContext
	c.settled = true
	return nil
}

// call runs one exchange with the controller within --timeout.
func (c *cli) call(cmd *cobra.Command, paged bool, fn func(ctx context.Context, conn *grpc.ClientConn) error) error {
	conn, err := c.connect()
	if err != nil {
		return err
	}
	if paged { // each page has its own timeout (listPages)
		return fn(cmd.Context(), conn)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	return fn(ctx, conn)
}

// describe words an error for the operator; gRPC status codes become words.
func (c *cli) describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("cannot reach the controller at %s: %s (is it running? use --server, $%s or a config context)", c.server, st.Message(), serverEnv)
	case codes.DeadlineExceeded:
		return fmt.Sprintf("no answer from the controller at %s within %s", c.server, c.timeout)
	}
	return fmt.Sprintf("%s: %s", codeWords(st.Code()), st.Message())
}

// codeWords turns a gRPC code name into words: FailedPrecondition -> "failed precondition".
func codeWords(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte(' ')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
