// Package rtnl is the raw rtnetlink codec and socket pkg/overlay uses for bulk
// route work: batched route and nexthop writes (many requests per sendmsg) and
// kernel-filtered dumps of routes, nexthop objects and policy rules, which the
// generic netlink library does one round trip at a time. The message encoding
// and decoding (msg.go) is pure and fuzzed.
package rtnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// InNamespace runs fn on a throwaway OS thread that has joined ns. The thread is
// never handed back to the Go scheduler (it exits with the goroutine), so no
// other goroutine ever runs in the wrong namespace. A closed (-1) ns runs fn in
// the current thread's namespace.
func InNamespace(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread ends with this goroutine.
		if err := netns.Set(ns); err != nil {
			done <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// Conn is a raw NETLINK_ROUTE socket bound in one namespace, used for the bulk
// route work (batched writes, filtered dumps) that the generic library does one
// round trip at a time.
type Conn struct {
	fd   int
	seq  uint32
	rbuf []byte
}

const (
	batchBytes = 32 << 10 // bytes of requests per sendmsg
	rcvBuf     = 8 << 20
)

// Open opens a socket in ns (netns.None(): the caller's namespace).
func Open(ns netns.NsHandle) (*Conn, error) {
	var fd int
	err := InNamespace(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink route socket: %w", err)
	}
	s := &Conn{fd: fd, rbuf: make([]byte, 1<<16)}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		s.Close()
		return nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	// Room for the acknowledgements of a whole batch; FORCE needs CAP_NET_ADMIN.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
		s.Close()
		return nil, fmt.Errorf("netlink strict checking: %w", err)
	}
	tv := unix.Timeval{Sec: 30}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return s, nil
}

// Close closes the socket.
func (s *Conn) Close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

func (s *Conn) send(b []byte) error {
	for {
		err := unix.Sendto(s.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err
	}
}

func (s *Conn) recv() ([]nlmsg, error) {
	for {
		n, _, err := unix.Recvfrom(s.fd, s.rbuf, unix.MSG_TRUNC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n > len(s.rbuf) {
			// Message larger than the buffer: grow and let the caller retry on
			// the next message (this one is lost, which only happens to dumps,
			// and dumps are restarted).
			s.rbuf = make([]byte, n*2)
			return nil, fmt.Errorf("netlink message of %d bytes truncated", n)
		}
		return splitMessages(s.rbuf[:n])
	}
}

// Op is one route or nexthop object to add (replace) or delete.
type Op struct {
	Del     bool
	Route   Route
	Nexthop bool // NH, not Route
	NH      Nexthop
	NHKey   NexthopKey // deletes: the caller's key for the nexthop (not sent)
}

// Apply writes ops in batches: many requests per sendmsg. Only the last
// request of a batch asks for an acknowledgement; the kernel answers the
// others only when they fail, and answers in order, so the last one's ack
// means the whole batch is done. errs[i] is the kernel's answer to ops[i].
func (s *Conn) Apply(ops []Op) []error {
	errs := make([]error, len(ops))
	buf := make([]byte, 0, batchBytes+512)
	for i := 0; i < len(ops); {
		buf = buf[:0]
		batchStart, first := i, s.seq+1
		lastOff, lastSeq := -1, uint32(0)
		for i < len(ops) && len(buf) < batchBytes {
			op := ops[i]
			s.seq++
			off := len(buf)
			var err error
			if op.Nexthop {
				if op.Del {
					buf = appendNexthopMsg(buf, rtmDelNexthop, nlmFRequest, s.seq, op.NH)
				} else {
					buf = appendNexthopMsg(buf, rtmNewNexthop, nlmFRequest|nlmFCreate|nlmFReplace, s.seq, op.NH)
				}
			} else if op.Del {
				buf, err = appendRouteMsg(buf, rtmDelRoute, nlmFRequest, s.seq, op.Route)
			} else {
				buf, err = appendRouteMsg(buf, rtmNewRoute, nlmFRequest|nlmFCreate|nlmFReplace, s.seq, op.Route)
			}
			if err != nil {
				errs[i] = err
			} else {
				lastOff, lastSeq = off, s.seq
			}
			i++
		}
		if lastOff < 0 {
			continue
		}
		flags := binary.NativeEndian.Uint16(buf[lastOff+6:])
		binary.NativeEndian.PutUint16(buf[lastOff+6:], flags|nlmFAck)
		batchErr := func(err error) {
			for j := batchStart; j < i; j++ {
				if errs[j] == nil {
					errs[j] = err
				}
			}
		}
		if err := s.send(buf); err != nil {
			batchErr(fmt.Errorf("netlink send: %w", err))
			continue
		}
		for done := false; !done; {
			msgs, err := s.recv()
			if err != nil {
				// Unknown which requests of the batch took effect; the caller's
				// record is corrected by the next resync.
				batchErr(fmt.Errorf("netlink acknowledgement: %w", err))
				s.drain()
				break
			}
			for _, m := range msgs {
				if m.Type != nlmsgError || m.Seq < first || m.Seq > lastSeq {
					continue
				}
				j := batchStart + int(m.Seq-first)
				if m.Seq == lastSeq {
					done = true
				}
				code, err := errnoOf(m.Data)
				if err != nil {
					errs[j] = err
				} else if code != 0 {
					if msg := extAckMessage(m); msg != "" {
						errs[j] = fmt.Errorf("%s: %s: %w", opName(ops[j]), msg, syscall.Errno(code))
					} else {
						errs[j] = fmt.Errorf("%s: %w", opName(ops[j]), syscall.Errno(code))
					}
				}
			}
		}
	}
	return errs
}

func opName(op Op) string {
	verb := "add"
	if op.Del {
		verb = "delete"
	}
	if op.Nexthop {
		return fmt.Sprintf("%s nexthop %d (oif %d, label %d)", verb, op.NH.ID, op.NH.Oif, op.NH.Encap)
	}
	return fmt.Sprintf("%s route %v", verb, op.Route)
}

func (s *Conn) drain() {
	for {
		_, _, err := unix.Recvfrom(s.fd, s.rbuf, unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
	}
}

// DumpRoutes lists the routes of one family that carry the given protocol, across all
// tables, with the kernel doing the filtering (strict checking).
func (s *Conn) DumpRoutes(family, protocol uint8) ([]Route, error) {
	var out []Route
	err := s.dumpRetry(func(seq uint32) []byte { return appendDumpRequest(nil, seq, family, protocol) },
		func() { out = out[:0] },
		func(m nlmsg) error {
			if m.Type != rtmNewRoute {
				return nil
			}
			r, err := decodeRoute(m.Data)
			if err != nil {
				return err
			}
			if r.Protocol == protocol && (r.Family != AFInet && r.Family != AFInet6 || r.Table != 0) {
				out = append(out, r)
			}
			return nil
		})
	return out, err
}

// DumpNexthops lists the nexthop objects that carry the given protocol.
func (s *Conn) DumpNexthops(protocol uint8) ([]Nexthop, error) {
	var out []Nexthop
	err := s.dumpRetry(func(seq uint32) []byte {
		b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+nhmsgLen)
		b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.NativeEndian.PutUint32(b, uint32(len(b)))
		binary.NativeEndian.PutUint16(b[4:], rtmGetNexthop)
		binary.NativeEndian.PutUint16(b[6:], nlmFRequest|nlmFDump)
		binary.NativeEndian.PutUint32(b[8:], seq)
		return b
	}, func() { out = out[:0] }, func(m nlmsg) error {
		if m.Type != rtmNewNexthop {
			return nil
		}
		n, err := decodeNexthop(m.Data)
		if err != nil {
			return err
		}
		if n.Protocol == protocol {
			out = append(out, n)
		}
		return nil
	})
	return out, err
}

// DumpRules lists the policy rules of one family (strict checking).
func (s *Conn) DumpRules(family uint8) ([]Rule, error) {
	var out []Rule
	err := s.dumpRetry(func(seq uint32) []byte { return appendRuleDumpRequest(nil, seq, family) },
		func() { out = out[:0] },
		func(m nlmsg) error {
			if m.Type != rtmNewRule {
				return nil
			}
			r, err := decodeRule(m.Data)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	return out, err
}

func (s *Conn) dumpRetry(req func(seq uint32) []byte, reset func(), each func(nlmsg) error) error {
	for attempt := 0; attempt < 5; attempt++ {
		reset()
		interrupted, err := s.dumpOnce(req, each)
		if err != nil || !interrupted {
			return err
		}
	}
	return errors.New("dump interrupted by concurrent changes 5 times")
}

func (s *Conn) dumpOnce(req func(seq uint32) []byte, each func(nlmsg) error) (bool, error) {
	s.seq++
	seq := s.seq
	if err := s.send(req(seq)); err != nil {
		return false, fmt.Errorf("dump request: %w", err)
	}
	interrupted := false
	for {
		msgs, err := s.recv()
		if err != nil {
			s.drain()
			return false, fmt.Errorf("dump: %w", err)
		}
		for _, m := range msgs {
			if m.Seq != seq {
				continue
			}
			if m.Flags&nlmFDumpInt != 0 {
				interrupted = true
			}
			switch m.Type {
			case nlmsgDone:
				return interrupted, nil
			case nlmsgError:
				code, err := errnoOf(m.Data)
				if err != nil {
					return false, err
				}
				if code != 0 {
					return false, fmt.Errorf("dump: %w", syscall.Errno(code))
				}
			default:
				if err := each(m); err != nil {
					s.drain()
					return false, fmt.Errorf("dump: %w", err)
				}
			}
		}
	}
}
