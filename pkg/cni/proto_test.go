package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"op":"add","containerID":"c1","ifName":"eth0","netns":"/var/run/netns/x","network":"red"}`,
		`{"op":"attach","containerID":"c1","ifName":"eth0","mac":"02:00:00:00:00:01"}`,
		`{"op":"gc","valid":[{"containerID":"c1","ifName":"eth0"}]}`,
		`{"op":"status"}`,
		`{"op":"add","containerID":"c1","ifName":"eth0","podNamespace":"ns"}`,
		`{"op":"del"}`,
		`{"op":`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeRequest(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
		if len(req.Valid) == 0 {
			req.Valid = nil // [] and absent are the same request
		}
		if !reflect.DeepEqual(req, again) {
			t.Fatalf("round trip changed the request: %+v -> %+v", req, again)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(`{"endpoint":{"id":"c1:eth0","containerID":"c1","ifName":"eth0","network":"red","addresses":["10.1.0.1","fd00::1"],"label":16,"hostIf":"iotf0123456789a"},"gateway":"169.254.1.1"}`))
	f.Add([]byte(`{"error":{"code":7,"msg":"unknown network"}}`))
	f.Add([]byte(`{"error":{"code":0,"msg":"x"}}`))
	f.Add([]byte(`{"released":[{"id":"a","addresses":["zz"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, err := DecodeResponse(bytes.NewReader(data))
		if err != nil {
			return
		}
		if resp.Error != nil && resp.Error.Code == 0 {
			t.Fatal("an error without a code")
		}
		b, err := json.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeResponse(bytes.NewReader(b)); err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
	})
}

func TestServerClient(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cni.sock")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	os.Remove(path)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &Server{Handler: HandlerFunc(func(ctx context.Context, req *Request) *Response {
		if req.Network == "blue" {
			return &Response{Error: Errorf(CodeInvalidNetworkConf, "unknown network %q", req.Network)}
		}
		return &Response{Endpoint: &Endpoint{ID: EndpointID(req.ContainerID, req.IfName), Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.1")}}}
	})}
	go func() { done <- srv.Serve(ctx, l) }()
	c := &Client{Path: path}
	resp, err := c.Do(ctx, &Request{Op: OpAdd, ContainerID: "c1", IfName: "eth0", Network: "red"})
	if err != nil || resp.Endpoint.ID != "c1:eth0" {
		t.Fatalf("add: %+v %v", resp, err)
	}
	_, err = c.Do(ctx, &Request{Op: OpAdd, ContainerID: "c1", IfName: "eth0", Network: "blue"})
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != CodeInvalidNetworkConf {
		t.Fatalf("refused add: %v", err)
	}
	// Garbage gets a decoding error, and the server keeps serving.
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("{not json"))
	conn.(*net.UnixConn).CloseWrite()
	bad, err := DecodeResponse(conn)
	conn.Close()
	if err != nil || bad.Error == nil || bad.Error.Code != CodeDecodingFailure {
		t.Fatalf("garbage: %+v %v", bad, err)
	}
	if _, err := c.Do(ctx, &Request{Op: "launch"}); err == nil || !strings.Contains(err.Error(), "unknown operation") {
		t.Fatalf("unknown op: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("socket left after Serve returned")
	}
	_, err = c.Do(context.Background(), &Request{Op: OpStatus})
	if !errors.As(err, &ce) || ce.Code != CodeTryAgainLater {
		t.Fatalf("no agent: %v", err)
	}
}

// TestServerDropsRequestsOfGonePlugins: a request whose plugin died before
// the agent accepted it (it waited in the listen backlog) is not acted on.
func TestServerDropsRequestsOfGonePlugins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cni.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	json.NewEncoder(conn).Encode(&Request{Op: OpAdd, ContainerID: "dead", IfName: "eth0", Network: "red"})
	conn.Close() // the plugin is killed before the agent gets to it
	calls := make(chan string, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &Server{Handler: HandlerFunc(func(ctx context.Context, req *Request) *Response {
		calls <- req.ContainerID
		return &Response{}
	})}
	go func() { done <- srv.Serve(ctx, l) }()
	if _, err := (&Client{Path: path}).Do(ctx, &Request{Op: OpStatus, ContainerID: "alive"}); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	close(calls)
	var got []string
	for c := range calls {
		got = append(got, c)
	}
	if len(got) != 1 || got[0] != "alive" {
		t.Fatalf("handled %v, want only the live request", got)
	}
}
