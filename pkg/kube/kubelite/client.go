package kubelite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to one API server over HTTPS with JSON.
type Client struct {
	base   string // the server's URL, escaped, without a trailing /
	http   *http.Client
	tokens *tokenSource
	ua     string
	max    int64
}

// New builds a client; nothing is sent until it is used.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.Server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("kubelite: server %q is not an http(s)://host[:port] URL", cfg.Server)
	}
	tc, err := cfg.tlsConfig(u.Hostname())
	if err != nil {
		return nil, fmt.Errorf("kubelite: %w", err)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
		// A watch that stays silent is checked with a ping (as client-go's
		// ReadIdleTimeout and PingTimeout), so a dead connection is noticed.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	if cfg.ProxyURL != "" {
		p, err := url.Parse(cfg.ProxyURL)
		if err != nil {
			return nil, fmt.Errorf("kubelite: proxy-url: %w", err)
		}
		tr.Proxy = http.ProxyURL(p)
	}
	c := &Client{base: strings.TrimSuffix(u.String(), "/"), http: &http.Client{Transport: tr}, tokens: &tokenSource{static: cfg.Token, file: cfg.TokenFile},
		ua: cfg.UserAgent, max: cfg.MaxObjectBytes}
	if c.ua == "" {
		c.ua = "iotfabric"
	}
	if c.max <= 0 {
		c.max = DefaultMaxObjectBytes
	}
	if _, err := c.tokens.token(); err != nil {
		return nil, fmt.Errorf("kubelite: %w", err)
	}
	return c, nil
}

// Close closes the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// maxStatusBytes bounds the body of an error answer.
const maxStatusBytes = 64 << 10

// request sends a request and answers the response of a 2xx status; any
// other status is a *StatusError (the body read, bounded, and closed). path
// is escaped already (objectPath).
func (c *Client) request(ctx context.Context, method, path string, query url.Values, body []byte, contentType string) (*http.Response, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("kubernetes API %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	tok, err := c.tokens.token()
	if err != nil {
		return nil, fmt.Errorf("kubernetes API %s %s: %w", method, path, err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kubernetes API %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		c.tokens.expire()
	}
	se := &StatusError{Method: method, Path: path, Code: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes))
	var st status
	if json.Unmarshal(b, &st) == nil && st.Kind == "Status" {
		se.Reason, se.Message = st.Reason, st.Message
	}
	return nil, se
}

// Do sends in (JSON, unless nil) and decodes the answer into out (unless
// nil), bounded by MaxObjectBytes.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	ctype := ""
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("kubernetes API %s %s: %w", method, path, err)
		}
		ctype = "application/json"
	}
	return c.do(ctx, method, path, nil, body, ctype, out)
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, contentType string, out any) error {
	resp, err := c.request(ctx, method, path, query, body, contentType)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, c.max))
		return err
	}
	if err := newDecoder(resp.Body, c.max, "answer to "+method+" "+path).decode(out); err != nil {
		return fmt.Errorf("kubernetes API %s %s: %w", method, path, err)
	}
	return nil
}

// GetPod reads a pod.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*Pod, error) {
	if namespace == "" || name == "" {
		return nil, errors.New("kubelite: a pod's namespace and name are required")
	}
	var p Pod
	if err := c.do(ctx, http.MethodGet, objectPath("pods", namespace, name), nil, nil, "", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// GetNamespace reads a namespace.
func (c *Client) GetNamespace(ctx context.Context, name string) (*Namespace, error) {
	if name == "" {
		return nil, errors.New("kubelite: a namespace's name is required")
	}
	var n Namespace
	if err := c.do(ctx, http.MethodGet, objectPath("namespaces", "", name), nil, nil, "", &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// MergePatchPod applies a JSON merge patch (RFC 7386) to a pod.
func (c *Client) MergePatchPod(ctx context.Context, namespace, name string, patch []byte) error {
	if namespace == "" || name == "" {
		return errors.New("kubelite: a pod's namespace and name are required")
	}
	return c.do(ctx, http.MethodPatch, objectPath("pods", namespace, name), nil, patch, "application/merge-patch+json", nil)
}

// CreateEvent creates a core/v1 Event in its namespace.
func (c *Client) CreateEvent(ctx context.Context, ev *Event) error {
	ev.APIVersion, ev.Kind = "v1", "Event"
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/api/v1/namespaces/"+url.PathEscape(ev.Metadata.Namespace)+"/events", nil, b, "application/json", nil)
}

// objectPath is the core/v1 path of an object (namespace empty: a
// cluster-scoped one), or of its collection when name is empty.
func objectPath(resource, namespace, name string) string {
	p := "/api/v1/"
	if namespace != "" {
		p += "namespaces/" + url.PathEscape(namespace) + "/"
	}
	p += resource
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

// errBody: a 2xx answer that is not what was asked.
var errBody = errors.New("unexpected answer")
