package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/enrollclient"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// tokenCommand is "gateway token" or "user token": create, list, delete.
func (c *cli) tokenCommand(kind v1.TokenKind) *cobra.Command {
	noun, what := "gateway", "a gateway's agent"
	if kind == v1.TokenKind_TOKEN_KIND_USER {
		noun, what = "user", "an operator"
	}
	return c.noun("token", "One-time bootstrap tokens that enroll "+what,
		`A bootstrap token is used once, before it expires, to get a certificate
signed by the controller's CA (docs/security.md). The controller keeps only
its hash; it is printed once, when created.`,
		[]string{"tokens"},
		c.tokenCreate(kind, noun),
		verb{use: "list", short: "List the tokens not used yet (gateway and user tokens)",
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) error {
				r, err := v1.NewEnrollmentServiceClient(conn).ListTokens(ctx, &v1.ListTokensRequest{})
				if err != nil {
					return err
				}
				if c.format == "json" {
					return c.printJSON(toMsgs(r.Tokens), false)
				}
				var rows [][]string
				now := time.Now()
				for _, t := range r.Tokens {
					exp := time.Unix(t.ExpiresUnix, 0).UTC().Format(time.RFC3339)
					if now.After(time.Unix(t.ExpiresUnix, 0)) {
						exp += " (expired)"
					}
					rows = append(rows, []string{t.Id, strings.TrimPrefix(strings.ToLower(t.Kind.String()), "token_kind_"), t.Name, orDash(t.Role), exp})
				}
				return c.table("ID\tKIND\tNAME\tROLE\tEXPIRES", rows)
			}},
		verb{use: "delete ID", short: "Delete a token (it can no longer be used)", args: oneName,
			call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
				if _, err := v1.NewEnrollmentServiceClient(conn).DeleteToken(ctx, &v1.DeleteTokenRequest{Id: args[0]}); err != nil {
					return err
				}
				return c.deleted("token", args[0])
			}},
	)
}

func (c *cli) tokenCreate(kind v1.TokenKind, noun string) verb {
	var ttl time.Duration
	var role string
	v := verb{
		use:   "create NAME [--ttl 1h]",
		short: "Create a one-time bootstrap token bound to NAME, and print it",
		args:  oneName,
		flags: func(cmd *cobra.Command) {
			cmd.Flags().DurationVar(&ttl, "ttl", enroll.DefaultTokenTTL, "the token may be used within this `DURATION`")
			if kind == v1.TokenKind_TOKEN_KIND_USER {
				cmd.Flags().StringVar(&role, "role", "", "the operator's `ROLE`: admin or viewer (required)")
				cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"admin", "viewer"}, cobra.ShellCompDirectiveNoFileComp))
			}
		},
		check: func(*cobra.Command, []string) error {
			if ttl < time.Second {
				return usagef("--ttl %s: want a duration of a second or more, such as 1h", ttl)
			}
			if kind == v1.TokenKind_TOKEN_KIND_USER && role != "admin" && role != "viewer" {
				return usagef("user token create needs --role admin or --role viewer")
			}
			return nil
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
			r, err := v1.NewEnrollmentServiceClient(conn).CreateToken(ctx, &v1.CreateTokenRequest{Kind: kind, Name: args[0], Role: role, TtlSeconds: int64(ttl / time.Second)})
			if err != nil {
				return err
			}
			if c.format == "json" {
				return c.printJSON(toMsgs([]*v1.CreateTokenResponse{r}), true)
			}
			exp := time.Unix(r.Info.ExpiresUnix, 0).UTC().Format(time.RFC3339)
			use := fmt.Sprintf("vrouter-agent --join %s --ca-fingerprint %s --controller %s --underlay IP", r.Token, r.CaFingerprint, c.server)
			if kind == v1.TokenKind_TOKEN_KIND_USER {
				use = fmt.Sprintf("iotfabricctl login --token %s --ca-fingerprint %s --controller %s", r.Token, r.CaFingerprint, c.server)
			}
			_, err = fmt.Fprintf(c.out, "%s\n\n# used once, before %s, by:\n#   %s\n", r.Token, exp, use)
			return err
		},
	}
	if kind == v1.TokenKind_TOKEN_KIND_USER {
		v.use = "create NAME --role admin|viewer [--ttl 1h]"
		v.example = "  iotfabricctl user token create alice --role admin"
	} else {
		v.example = "  iotfabricctl gateway token create gw-7 --ttl 24h"
	}
	return v
}

func (c *cli) gatewayRevoke() verb {
	var purge bool
	return verb{
		use:   "revoke NAME [--purge]",
		short: "Revoke a gateway's certificates: refused from now on, its streams closed",
		long: `Revokes every certificate the controller's CA issued to the gateway: every
controller refuses them from now on and closes the gateway's open streams. The
gateway's endpoints stay (their routes too) unless --purge is given. The
gateway may enroll again later with a new token.`,
		args: oneName, names: gatewayNames,
		flags: func(cmd *cobra.Command) {
			cmd.Flags().BoolVar(&purge, "purge", false, "delete the gateway's endpoints too")
		},
		call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) error {
			r, err := v1.NewEnrollmentServiceClient(conn).RevokeGateway(ctx, &v1.RevokeGatewayRequest{Gateway: args[0], Purge: purge})
			if err != nil {
				return err
			}
			if c.format == "json" {
				return c.printJSON(toMsgs([]*v1.RevokeGatewayResponse{r}), true)
			}
			_, err = fmt.Fprintf(c.out, "gateway %s: %d certificates revoked, %d endpoints deleted\n", args[0], len(r.Serials), r.EndpointsDeleted)
			return err
		},
	}
}

func (c *cli) gatewayRevoked() verb {
	return verb{use: "revoked", short: "List the revoked certificates (gateways and operators)",
		call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) error {
			r, err := v1.NewEnrollmentServiceClient(conn).ListRevoked(ctx, &v1.ListRevokedRequest{})
			if err != nil {
				return err
			}
			if c.format == "json" {
				return c.printJSON(toMsgs(r.Certificates), false)
			}
			var rows [][]string
			for _, x := range r.Certificates {
				rows = append(rows, []string{x.Serial, x.Identity, time.Unix(x.RevokedUnix, 0).UTC().Format(time.RFC3339), time.Unix(x.NotAfterUnix, 0).UTC().Format(time.RFC3339)})
			}
			return c.table("SERIAL\tIDENTITY\tREVOKED\tEXPIRES", rows)
		}}
}

func (c *cli) userCommand() *cobra.Command {
	cmd := c.noun("user", "Operators: their bootstrap tokens",
		`An operator gets a certificate of the admin or viewer role with a token an
admin creates (user token create) and "iotfabricctl login".`,
		[]string{"users"})
	cmd.AddCommand(c.tokenCommand(v1.TokenKind_TOKEN_KIND_USER))
	return cmd
}

// loginCommand enrolls an operator: a key made here, a certificate for the
// token's identity, and a config context that uses them.
func (c *cli) loginCommand() *cobra.Command {
	var token, controller, fingerprint, name string
	cmd := &cobra.Command{
		Use:   "login --token TOKEN --controller HOST:PORT --ca-fingerprint SHA256 [--name CONTEXT]",
		Short: "Enroll with a user token: make a key, get a certificate, write a config context",
		Long: `Generates a key (ECDSA P-256) on this machine, sends a certificate signing
request with the token over TLS trusted by the CA fingerprint, and keeps the
key (0600), the certificate and the CA next to the config file, in
<config dir>/<context>/. The context (named --name, else after the controller)
is written to the config file and made current, so that no flags are needed
afterwards. "iotfabricctl renew" renews the certificate before it expires.`,
		Example:           "  iotfabricctl login --token iof1.… --controller ctl.example:50051 --ca-fingerprint sha256:…",
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" || controller == "" || fingerprint == "" {
				return usagef("login needs --token, --controller and --ca-fingerprint")
			}
			if name == "" {
				name = controller
			}
			path, cf, err := readConfig()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
			defer cancel()
			c.server = controller
			id, err := enrollclient.Join(ctx, controller, token, fingerprint)
			if err != nil {
				return err
			}
			dir, err := filepath.Abs(filepath.Join(filepath.Dir(path), strings.ReplaceAll(name, "/", "_")))
			if err != nil {
				return err
			}
			if err := id.Save(dir); err != nil {
				return err
			}
			p := enrollclient.Paths(dir)
			x, ferr := cf.find(name)
			if ferr != nil {
				cf.Contexts = append(cf.Contexts, configContext{Name: name})
				x = &cf.Contexts[len(cf.Contexts)-1]
			}
			x.Server, x.TLSCert, x.TLSKey, x.TLSCA = controller, p.Cert, p.Key, p.CA
			cf.CurrentContext = name
			if err := saveConfig(path, cf); err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.out, "logged in as %s at %s (certificate until %s); context %s is current in %s\n",
				id.Name(), controller, id.Cert.NotAfter.UTC().Format(time.RFC3339), name, path)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&token, "token", "", "the bootstrap `TOKEN` (iotfabricctl user token create)")
	f.StringVar(&controller, "controller", "", "the controller's API `HOST:PORT`")
	f.StringVar(&fingerprint, "ca-fingerprint", "", "SHA-256 `FINGERPRINT` of the controller's CA (sha256:<hex>, printed with the token)")
	f.StringVar(&name, "name", "", "config context `NAME` (default: the controller's address)")
	for _, n := range []string{"token", "controller", "ca-fingerprint", "name"} {
		cmd.RegisterFlagCompletionFunc(n, cobra.NoFileCompletions)
	}
	return cmd
}

// renewCommand renews the certificate of the current context (one written
// by login) over its own identity.
func (c *cli) renewCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "renew",
		Short: "Renew the certificate of the current context (made by login)",
		Long: `Asks the controller for a new certificate for the identity of the current
context's certificate (also expired, within the controller's renewal grace),
and replaces the certificate in place.`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.settle(); err != nil {
				return err
			}
			dir := filepath.Dir(c.tls.Cert)
			if !c.tls.Enabled() || enrollclient.Paths(dir) != c.tls {
				return usagef("renew needs a context written by login (its certificate, key and CA in one directory)")
			}
			id, err := enrollclient.Load(dir)
			if err != nil {
				return err
			}
			r, err := enrollclient.NewRenewer(id, dir, []string{c.server}, nil)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
			defer cancel()
			if err := r.RenewNow(ctx); err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.out, "renewed %s: certificate until %s\n", r.Identity().Name(), r.Identity().Cert.NotAfter.UTC().Format(time.RFC3339))
			return err
		},
	}
}
