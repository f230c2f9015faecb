package iqrftest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/cdc"
	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
	"github.com/iotfabric/iotfabric/pkg/iqrf/sensor"
	"github.com/iotfabric/iotfabric/pkg/iqrf/uart"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// Framing selects the link layer the simulator speaks.
type Framing int

const (
	UART Framing = iota
	CDC
)

// Sensor is one sensor of a simulated node: its type and raw value bytes.
type Sensor struct {
	Type uint8
	Raw  []byte
}

// Node is a simulated bonded node.
type Node struct {
	Addr    uint8
	HWPID   uint16
	Sensors []Sensor
	// Silent nodes confirm requests but never answer.
	Silent bool
	// Reads counts the Read Sensors [With Types] requests answered.
	Reads uint64
}

// Fault is a misbehaviour applied to the next frames the simulator sends.
type Fault int

const (
	// FaultCRC corrupts the CRC of the next response.
	FaultCRC Fault = iota + 1
	// FaultGarble sends line noise and a frame too short to be DPA before
	// the next response.
	FaultGarble
	// FaultTruncate cuts the last byte off the next response's PData (the
	// frame itself is well formed).
	FaultTruncate
	// FaultDrop never sends the next response.
	FaultDrop
	// FaultReset sends the reset message instead of the next response.
	FaultReset
)

// ReadEvent tells that the simulator answered a sensor read.
type ReadEvent struct {
	Addr uint8
	// Sent is when the response frame started to be written, Time when it
	// had been written.
	Sent  time.Time
	Time  time.Time
	Reads uint64
}

// Sim is a simulated IQRF coordinator with its network.
type Sim struct {
	Framing Framing
	// Hops, SlotLength and HopsResponse go into every confirmation
	// (default 1, 4, 1: one hop in an STD network).
	Hops, SlotLength, HopsResponse uint8
	// ResponseDelay is how long after the confirmation a node answers.
	ResponseDelay time.Duration
	// BeforeRead, if set, runs before a node's sensors are read, with the
	// simulator locked, and may change the sensors' raw values.
	BeforeRead func(n *Node)
	// OnRead, if set, receives an event after each answered sensor read. It
	// must not block.
	OnRead func(ReadEvent)
	Logger *slog.Logger

	mu     sync.Mutex // guards the fields below
	nodes  map[uint8]*Node
	faults []Fault
	frc    [64]byte // last FRC buffer, for Extra Result

	wmu sync.Mutex // guards writes to w
	w   io.Writer
}

// NewSim returns a simulator with the given nodes bonded.
func NewSim(nodes ...*Node) *Sim {
	s := &Sim{Hops: 1, SlotLength: 4, HopsResponse: 1, nodes: map[uint8]*Node{}}
	for _, n := range nodes {
		s.nodes[n.Addr] = n
	}
	return s
}

// Inject queues faults for the next responses, in order.
func (s *Sim) Inject(f ...Fault) {
	s.mu.Lock()
	s.faults = append(s.faults, f...)
	s.mu.Unlock()
}

// Update runs fn with the simulator locked, to change nodes safely.
func (s *Sim) Update(fn func(nodes map[uint8]*Node)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.nodes)
}

// ResetMessage is the asynchronous message a coordinator sends after it
// starts: NADR 0, PNUM 0xFF, PCMD 0x3F with the async flag, then the
// peripheral enumeration (DPA 4.17, as in vector O1).
var ResetMessage = []byte{0x00, 0x00, 0xff, 0xbf, 0x00, 0x00, 0x80, 0x00,
	0x17, 0x04, 0x00, 0xfd, 0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05}

// osReadO1 is vector O1: OS Read of a DPA 4.17 coordinator.
var osReadO1 = []byte{0x43, 0x7c, 0x11, 0x81, 0x46, 0x24, 0xd8, 0x08, 0x5c, 0x27, 0x20, 0x75, 0x9e, 0xdf, 0xea, 0xbd,
	0xf0, 0x57, 0x14, 0xa2, 0x05, 0x23, 0xe5, 0x6a, 0x81, 0x40, 0xf8, 0xae, 0x17, 0x04, 0x00, 0xfd, 0x26, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x05}

// Serve answers requests read from rw until ctx ends or rw fails. With
// reset it first sends the coordinator's reset message, as a coordinator
// that just started does.
func (s *Sim) Serve(ctx context.Context, rw io.ReadWriter, reset bool) error {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With(logkey.Component, logkey.ComponentIQRFSim)
	s.wmu.Lock()
	s.w = rw
	s.wmu.Unlock()
	if reset {
		if err := s.send(ResetMessage); err != nil {
			return err
		}
	}
	// A blocked Read returns when ctx ends (for pty masters and other files
	// with deadlines).
	if dl, ok := rw.(interface{ SetReadDeadline(time.Time) error }); ok {
		stop := context.AfterFunc(ctx, func() { dl.SetReadDeadline(time.Now()) })
		defer stop()
	}
	var (
		d   uart.Deframer
		p   = cdc.Parser{Prefix: '>'}
		buf = make([]byte, 256)
	)
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n, err := rw.Read(buf)
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("iqrftest: read: %w", err)
		}
		for _, c := range buf[:n] {
			var msg []byte
			switch s.Framing {
			case UART:
				m, ok, err := d.Push(c)
				if err != nil {
					log.Warn("bad frame from host", logkey.Err, err)
				}
				if !ok {
					continue
				}
				msg = m
			case CDC:
				m, ok, err := p.Push(c)
				if err != nil {
					log.Warn("bad CDC command", logkey.Err, err)
				}
				if !ok {
					continue
				}
				if m.Data == nil {
					s.writeRaw([]byte("<OK\r"))
					continue
				}
				s.writeRaw([]byte("<DS:OK\r"))
				msg = m.Data
			}
			var req dpa.Frame
			if err := req.DecodeRequest(msg); err != nil {
				log.Warn("not a request", logkey.Frame, dpa.DottedHex(msg))
				continue
			}
			req.PData = append([]byte(nil), req.PData...)
			s.handle(ctx, req)
		}
	}
}

func (s *Sim) writeRaw(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.w == nil {
		return errors.New("iqrftest: not serving")
	}
	_, err := s.w.Write(b)
	return err
}

// send frames and writes one DPA message.
func (s *Sim) send(msg []byte) error {
	var b []byte
	switch s.Framing {
	case CDC:
		b = cdc.AppendReceived(nil, msg)
	default:
		b = uart.AppendFrame(nil, msg)
	}
	return s.writeRaw(b)
}

// SendReset sends the coordinator's reset message now.
func (s *Sim) SendReset() error { return s.send(ResetMessage) }

func (s *Sim) nextFault() Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faults) == 0 {
		return 0
	}
	f := s.faults[0]
	s.faults = s.faults[1:]
	return f
}

// respond sends a response frame, applying any queued fault.
func (s *Sim) respond(req dpa.Frame, hwpid uint16, code dpa.ResponseCode, pdata []byte) {
	f := dpa.Frame{Kind: dpa.KindResponse, NADR: req.NADR, PNUM: req.PNUM, PCMD: req.PCMD, HWPID: hwpid, ErrN: code, DpaValue: 0x40, PData: pdata}
	if req.NADR == dpa.AddrLocal {
		f.NADR = dpa.AddrCoordinator
	}
	switch s.nextFault() {
	case FaultDrop:
		return
	case FaultReset:
		s.send(ResetMessage)
		return
	case FaultTruncate:
		if len(f.PData) > 0 {
			f.PData = f.PData[:len(f.PData)-1]
		}
	case FaultGarble:
		s.writeRaw([]byte{0x13, 0x37, 0x7e, 0x7e})
		s.send([]byte{0x01, 0x02, 0x03})
	case FaultCRC:
		b := uart.AppendFrame(nil, f.Append(nil))
		b[len(b)-2] ^= 0x55
		if b[len(b)-2] == 0x7e || b[len(b)-2] == 0x7d {
			b[len(b)-2] ^= 0x01
		}
		s.writeRaw(b)
		return
	}
	s.send(f.Append(nil))
}

func (s *Sim) handle(ctx context.Context, req dpa.Frame) {
	if req.NADR == dpa.AddrCoordinator || req.NADR == dpa.AddrLocal {
		s.handleCoordinator(req)
		return
	}
	s.mu.Lock()
	n := s.nodes[uint8(req.NADR)]
	s.mu.Unlock()
	if n == nil || req.NADR > dpa.AddrMaxNode {
		// Not bonded: the coordinator refuses at once, without a
		// confirmation.
		s.respond(req, 0, dpa.ErrorNADR, nil)
		return
	}
	conf := dpa.Frame{Kind: dpa.KindConfirmation, NADR: req.NADR, PNUM: req.PNUM, PCMD: req.PCMD, HWPID: req.HWPID,
		DpaValue: 0x50, Hops: s.Hops, SlotLength: s.SlotLength, HopsResponse: s.HopsResponse}
	s.send(conf.Append(nil))
	if s.ResponseDelay > 0 {
		t := time.NewTimer(s.ResponseDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
	s.mu.Lock()
	if n.Silent {
		s.mu.Unlock()
		return
	}
	if req.HWPID != dpa.HWPIDDoNotCheck && req.HWPID != n.HWPID {
		s.mu.Unlock()
		s.respond(req, n.HWPID, dpa.ErrorHWPID, nil)
		return
	}
	if req.PNUM != dpa.PNUMStdSensor {
		s.mu.Unlock()
		s.respond(req, n.HWPID, dpa.ErrorPNUM, nil)
		return
	}
	var (
		pdata []byte
		code  dpa.ResponseCode
		ev    *ReadEvent
	)
	switch req.PCMD {
	case sensor.CmdEnumerate:
		for _, se := range n.Sensors {
			pdata = append(pdata, se.Type)
		}
	case sensor.CmdReadSensorsWithTypes, sensor.CmdReadSensors:
		bitmap := uint32(1)
		if len(req.PData) >= 4 {
			bitmap = binary.LittleEndian.Uint32(req.PData)
		}
		if s.BeforeRead != nil {
			s.BeforeRead(n)
		}
		n.Reads++
		for i, se := range n.Sensors {
			if bitmap&(1<<i) == 0 {
				continue
			}
			if req.PCMD == sensor.CmdReadSensorsWithTypes {
				pdata = append(pdata, se.Type)
			}
			pdata = append(pdata, se.Raw...)
		}
		ev = &ReadEvent{Addr: n.Addr, Reads: n.Reads}
	default:
		code = dpa.ErrorPCMD
	}
	hwpid := n.HWPID
	s.mu.Unlock()
	sent := time.Now()
	s.respond(req, hwpid, code, pdata)
	if ev != nil && s.OnRead != nil {
		ev.Sent, ev.Time = sent, time.Now()
		s.OnRead(*ev)
	}
}

func (s *Sim) handleCoordinator(req dpa.Frame) {
	switch {
	case req.PNUM == dpa.PNUMCoordinator && req.PCMD == dpa.CmdCoordBonded:
		bitmap := make([]byte, 32)
		s.mu.Lock()
		for a := range s.nodes {
			bitmap[a/8] |= 1 << (a % 8)
		}
		s.mu.Unlock()
		// Real coordinators leave bits above 239 undefined; some set them.
		bitmap[30], bitmap[31] = 0xff, 0xff
		s.respond(req, 0, 0, bitmap)
	case req.PNUM == dpa.PNUMCoordinator && req.PCMD == dpa.CmdCoordAddrInfo:
		s.mu.Lock()
		devs := byte(len(s.nodes))
		s.mu.Unlock()
		s.respond(req, 0, 0, []byte{devs, 0x2a})
	case req.PNUM == dpa.PNUMOS && req.PCMD == dpa.CmdOSRead:
		s.respond(req, 0, 0, osReadO1)
	case req.PNUM == dpa.PNUMFRC && (req.PCMD == dpa.CmdFRCSend || req.PCMD == dpa.CmdFRCSelective):
		s.handleFRC(req)
	case req.PNUM == dpa.PNUMFRC && req.PCMD == dpa.CmdFRCExtraResult:
		s.mu.Lock()
		extra := append([]byte(nil), s.frc[55:]...)
		s.mu.Unlock()
		s.respond(req, 0, 0, extra)
	default:
		s.respond(req, 0, dpa.ErrorPNUM, nil)
	}
}

// handleFRC answers a sensor FRC (Send or Send Selective) from the nodes'
// current raw values.
func (s *Sim) handleFRC(req dpa.Frame) {
	var cmd uint8
	var slots []uint8 // node address of each slot, from slot 1
	var user []byte
	if req.PCMD == dpa.CmdFRCSend {
		if len(req.PData) < 5 {
			s.respond(req, 0, dpa.ErrorDataLen, nil)
			return
		}
		cmd, user = req.PData[0], req.PData[1:]
		for a := 1; a <= sensor.FRCCapacity(cmd); a++ {
			slots = append(slots, uint8(a))
		}
	} else {
		if len(req.PData) < 35 {
			s.respond(req, 0, dpa.ErrorDataLen, nil)
			return
		}
		cmd, user = req.PData[0], req.PData[31:]
		for a := 1; a <= dpa.AddrMaxNode; a++ {
			if req.PData[1+a/8]&(1<<(a%8)) != 0 {
				slots = append(slots, uint8(a))
			}
		}
	}
	capacity := sensor.FRCCapacity(cmd)
	if capacity == 0 || user[0] != dpa.PNUMStdSensor {
		s.respond(req, 0, dpa.ErrorData, nil)
		return
	}
	if len(slots) > capacity {
		slots = slots[:capacity]
	}
	typ, index := user[1], int(user[2]&0x1f)
	var buf [64]byte
	responded := 0
	s.mu.Lock()
	for i, addr := range slots {
		slot := i + 1
		n := s.nodes[addr]
		var f uint32 // 0: no response
		if n != nil && !n.Silent {
			responded++
			f = 1 // not implemented, unless the node has the sensor
			if s.BeforeRead != nil {
				s.BeforeRead(n)
			}
			k := 0
			for _, se := range n.Sensors {
				if typ != 0 && se.Type != typ {
					continue
				}
				if k == index {
					f = frcEncode(cmd, se)
					n.Reads++
					break
				}
				k++
			}
		}
		switch cmd {
		case sensor.FRC2Bit:
			buf[slot/8] |= byte(f&1) << (slot % 8)
			buf[32+slot/8] |= byte(f>>1&1) << (slot % 8)
		case sensor.FRC1Byte:
			buf[slot] = byte(f)
		case sensor.FRC2Byte:
			binary.LittleEndian.PutUint16(buf[2*slot:], uint16(f))
		case sensor.FRC4Byte:
			binary.LittleEndian.PutUint32(buf[4*slot:], f)
		}
	}
	s.frc = buf
	s.mu.Unlock()
	s.respond(req, 0, 0, append([]byte{byte(responded)}, buf[:55]...))
}

// frcEncode is what a node puts in the FRC buffer for a sensor value.
func frcEncode(cmd uint8, se Sensor) uint32 {
	q := sensor.Lookup(se.Type)
	if q == nil || len(se.Raw) != sensor.Width(se.Type) {
		return 2
	}
	var raw uint32
	switch len(se.Raw) {
	case 1:
		raw = uint32(se.Raw[0])
	case 2:
		raw = uint32(binary.LittleEndian.Uint16(se.Raw))
	case 4:
		raw = binary.LittleEndian.Uint32(se.Raw)
	}
	v, ok := q.Value(se.Raw)
	if !ok {
		return 2
	}
	switch cmd {
	case sensor.FRC2Bit:
		return 2 | raw&1
	case sensor.FRC1Byte:
		switch se.Type {
		case 0x01:
			return uint32(math.Round((v + 22) * 2))
		case 0x02, 0x03:
			return raw/16 + 4
		}
		return raw + 4
	case sensor.FRC2Byte:
		if se.Type == 0x01 || se.Type == 0x04 || se.Type == 0x05 || se.Type == 0x06 || se.Type == 0x07 || se.Type == 0x15 {
			return raw ^ 0x8000
		}
		return raw + 4
	case sensor.FRC4Byte:
		if se.Type == 0xA4 || se.Type == 0xA5 {
			return raw
		}
		return raw + 4
	}
	return 1
}
