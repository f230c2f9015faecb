package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"golang.org/x/sys/unix"
)

// Handler answers requests. It must honour ctx (the client went away or the
// server is stopping).
type Handler interface {
	Handle(ctx context.Context, req *Request) *Response
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) *Response

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req *Request) *Response { return f(ctx, req) }

// Listen creates the unix socket at path with mode 0600, atomically: it is
// bound under a temporary name, restricted, then renamed into place, so it is
// never reachable with looser permissions. A stale socket at path is replaced;
// any other kind of file there is an error.
func Listen(path string) (*Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("cni socket %s: exists and is not a socket", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("cni socket: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("cni socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("cni socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("cni socket: %w", err)
	}
	return &Listener{UnixListener: l, Path: path}, nil
}

// Listener is the agent's socket and its path.
type Listener struct {
	*net.UnixListener
	Path string
}

// Server serves Handler on a unix listener.
type Server struct {
	Handler Handler
	Log     *slog.Logger
	// Timeout bounds one request (default 30s).
	Timeout time.Duration
}

// Serve accepts connections until ctx ends, then closes l, waits for the
// requests in flight and returns nil. The socket file is removed.
func (s *Server) Serve(ctx context.Context, l *Listener) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With(logkey.Component, logkey.ComponentCNI)
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	path := l.Path
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() {
		if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == fs.ModeSocket {
			os.Remove(path)
		}
	}()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("cni socket: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c, timeout, log)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn, timeout time.Duration, log *slog.Logger) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	req, err := DecodeRequest(c)
	var resp *Response
	if err != nil {
		resp = &Response{Error: &Error{Code: CodeDecodingFailure, Msg: "bad request from the plugin", Details: err.Error()}}
	} else {
		// The plugin keeps its side open until it has the answer. A request
		// whose sender is already gone (killed while its request waited to
		// be accepted) is dropped rather than acted on.
		if peerClosed(c) {
			log.Debug("dropped a request whose plugin is gone", logkey.Op, req.Op, logkey.Container, req.ContainerID)
			return
		}
		// A plugin that goes away while its request runs cancels it.
		go func() {
			var b [1]byte
			_ = c.SetReadDeadline(time.Time{})
			if _, err := c.Read(b[:]); err != nil {
				cancel()
			}
		}()
		resp = s.Handler.Handle(ctx, req)
		if resp == nil {
			resp = &Response{Error: Errorf(CodeInternal, "no answer")}
		}
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(resp); err != nil {
		log.Debug("write response", logkey.Err, err)
	}
}

// peerClosed reports whether the other end of c has closed it, without
// blocking (MSG_PEEK|MSG_DONTWAIT: 0 bytes means end of stream).
func peerClosed(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		closed = err == nil && n == 0
		return true // never wait
	})
	return closed
}

// Client calls the agent.
type Client struct {
	// Path of the agent's socket.
	Path string
}

// Do sends req and returns the agent's response. A response carrying an error
// is returned as that *Error.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return nil, &Error{Code: CodeTryAgainLater, Msg: "the iotfabric vrouter agent is not reachable (is it running?)", Details: err.Error()}
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	// The write side stays open until the answer came: the agent drops
	// requests whose plugin is gone, and cancels them when it goes.
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, &Error{Code: CodeIOFailure, Msg: "send request to the vrouter agent", Details: err.Error()}
	}
	resp, err := DecodeResponse(conn)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, &Error{Code: CodeTryAgainLater, Msg: "no answer from the vrouter agent", Details: err.Error()}
	}
	if resp.Error != nil {
		return resp, resp.Error
	}
	return resp, nil
}
