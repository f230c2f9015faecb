package dpa

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes from DPA.h.
const (
	// MaxPData is DPA_MAX_DATA_LENGTH: sizeofBufferCOM(64) - 6 - 2.
	MaxPData = 56
	// MaxFrame is the longest DPA message on the interface (a response with
	// full PData).
	MaxFrame = 8 + MaxPData
	// ConfirmationLen is the fixed length of a confirmation.
	ConfirmationLen = 11
	// RequestHeaderLen is NADR, PNUM, PCMD and HWPID.
	RequestHeaderLen = 6
	// ResponseHeaderLen adds ErrN and DpaValue.
	ResponseHeaderLen = 8
)

// Well-known addresses, peripherals and flags.
const (
	AddrCoordinator = 0x00
	AddrMaxNode     = 0xEF // 239
	AddrLocal       = 0xFC
	AddrTemporary   = 0xFE
	AddrBroadcast   = 0xFF

	PNUMCoordinator   = 0x00
	PNUMNode          = 0x01
	PNUMOS            = 0x02
	PNUMFRC           = 0x0D
	PNUMStdSensor     = 0x5E
	PNUMErrorFlag     = 0xFE
	PNUMEnumeration   = 0xFF
	CmdGetPerInfo     = 0x3F
	ResponseFlag      = 0x80
	StatusAsync       = 0x80
	StatusConfirm     = 0xFF
	HWPIDDoNotCheck   = 0xFFFF
	CmdCoordAddrInfo  = 0x00
	CmdCoordBonded    = 0x02
	CmdOSRead         = 0x00
	CmdFRCSend        = 0x00
	CmdFRCExtraResult = 0x01
	CmdFRCSelective   = 0x02
)

// ErrMalformed is wrapped by every error about bytes that do not form a valid
// frame (DPA or link layer). Such errors are not fatal to a link: the next
// frame may be fine.
var ErrMalformed = errors.New("malformed frame")

// Kind says what a frame is.
type Kind uint8

// Frame kinds, told apart the way clibdpa does (DpaMessage.h MessageDirection).
const (
	KindRequest Kind = iota
	KindConfirmation
	KindResponse
	// KindAsync is a response with STATUS_ASYNC_RESPONSE set: unsolicited, not
	// the answer to a pending request (e.g. the coordinator's reset message).
	KindAsync
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindConfirmation:
		return "confirmation"
	case KindResponse:
		return "response"
	case KindAsync:
		return "async"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Frame is one DPA message. PCMD never carries the response flag; Kind says
// whether the frame was a response.
type Frame struct {
	Kind  Kind
	NADR  uint16
	PNUM  uint8
	PCMD  uint8
	HWPID uint16
	// ErrN is the response code without the async flag (responses and async
	// frames only).
	ErrN ResponseCode
	// DpaValue is the responding device's DPA value (responses,
	// confirmations).
	DpaValue uint8
	// Hops, SlotLength (10 ms units) and HopsResponse are set for
	// confirmations only.
	Hops         uint8
	SlotLength   uint8
	HopsResponse uint8
	// PData refers to the decoded buffer.
	PData []byte
}

// Decode parses b, a frame received from a coordinator or sent to one. It
// does not allocate; f.PData aliases b.
func (f *Frame) Decode(b []byte) error {
	n := len(b)
	if n < RequestHeaderLen {
		return fmt.Errorf("dpa: %d bytes, shorter than a header: %w", n, ErrMalformed)
	}
	if n > MaxFrame {
		return fmt.Errorf("dpa: %d bytes, longer than %d: %w", n, MaxFrame, ErrMalformed)
	}
	f.NADR = binary.LittleEndian.Uint16(b)
	f.PNUM = b[2]
	f.PCMD = b[3] &^ ResponseFlag
	f.HWPID = binary.LittleEndian.Uint16(b[4:])
	f.Hops, f.SlotLength, f.HopsResponse = 0, 0, 0
	if b[3]&ResponseFlag != 0 {
		if n < ResponseHeaderLen {
			return fmt.Errorf("dpa: response of %d bytes, shorter than %d: %w", n, ResponseHeaderLen, ErrMalformed)
		}
		f.Kind = KindResponse
		code := b[6]
		if code&StatusAsync != 0 && code != StatusConfirm {
			f.Kind = KindAsync
			code &^= StatusAsync
		}
		f.ErrN = ResponseCode(code)
		f.DpaValue = b[7]
		f.PData = b[ResponseHeaderLen:n:n]
		return nil
	}
	if n == ConfirmationLen && b[6] == StatusConfirm {
		f.Kind = KindConfirmation
		f.ErrN = StatusConfirm
		f.DpaValue = b[7]
		f.Hops, f.SlotLength, f.HopsResponse = b[8], b[9], b[10]
		f.PData = nil
		return nil
	}
	return f.decodeRequest(b)
}

// DecodeRequest parses b as a request (the host-to-coordinator direction,
// where PData may start with 0xFF without making a confirmation).
func (f *Frame) DecodeRequest(b []byte) error {
	n := len(b)
	if n < RequestHeaderLen {
		return fmt.Errorf("dpa: %d bytes, shorter than a header: %w", n, ErrMalformed)
	}
	if b[3]&ResponseFlag != 0 {
		return fmt.Errorf("dpa: PCMD 0x%02x has the response flag: %w", b[3], ErrMalformed)
	}
	f.NADR = binary.LittleEndian.Uint16(b)
	f.PNUM = b[2]
	f.PCMD = b[3]
	f.HWPID = binary.LittleEndian.Uint16(b[4:])
	f.Hops, f.SlotLength, f.HopsResponse = 0, 0, 0
	return f.decodeRequest(b)
}

func (f *Frame) decodeRequest(b []byte) error {
	n := len(b)
	if n-RequestHeaderLen > MaxPData {
		return fmt.Errorf("dpa: request PData of %d bytes, more than %d: %w", n-RequestHeaderLen, MaxPData, ErrMalformed)
	}
	f.Kind = KindRequest
	f.ErrN = 0
	f.DpaValue = 0
	f.PData = b[RequestHeaderLen:n:n]
	return nil
}

// Append encodes f after dst and returns the extended slice.
func (f *Frame) Append(dst []byte) []byte {
	pcmd := f.PCMD &^ ResponseFlag
	if f.Kind == KindResponse || f.Kind == KindAsync {
		pcmd |= ResponseFlag
	}
	dst = append(dst, byte(f.NADR), byte(f.NADR>>8), f.PNUM, pcmd, byte(f.HWPID), byte(f.HWPID>>8))
	switch f.Kind {
	case KindConfirmation:
		return append(dst, StatusConfirm, f.DpaValue, f.Hops, f.SlotLength, f.HopsResponse)
	case KindResponse:
		dst = append(dst, byte(f.ErrN), f.DpaValue)
	case KindAsync:
		dst = append(dst, byte(f.ErrN)|StatusAsync, f.DpaValue)
	}
	return append(dst, f.PData...)
}

// Validate checks that f can be encoded as a well-formed frame.
func (f *Frame) Validate() error {
	if len(f.PData) > MaxPData {
		return fmt.Errorf("dpa: PData of %d bytes, more than %d", len(f.PData), MaxPData)
	}
	if f.Kind == KindConfirmation && len(f.PData) != 0 {
		return errors.New("dpa: a confirmation carries no PData")
	}
	return nil
}

// Matches reports whether frame g (a confirmation or response) answers the
// request f.
func (f *Frame) Matches(g *Frame) bool {
	if f.PNUM != g.PNUM || f.PCMD != g.PCMD {
		return false
	}
	// Requests sent to the local interface device are answered by the
	// coordinator's address.
	if f.NADR == AddrLocal && g.NADR == AddrCoordinator {
		return true
	}
	return f.NADR == g.NADR
}

func (f *Frame) String() string {
	switch f.Kind {
	case KindConfirmation:
		return fmt.Sprintf("confirmation nadr=%d pnum=0x%02x pcmd=0x%02x hops=%d slot=%d hopsResponse=%d",
			f.NADR, f.PNUM, f.PCMD, f.Hops, f.SlotLength, f.HopsResponse)
	case KindResponse, KindAsync:
		return fmt.Sprintf("%s nadr=%d pnum=0x%02x pcmd=0x%02x hwpid=0x%04x rcode=%d pdata=%d bytes",
			f.Kind, f.NADR, f.PNUM, f.PCMD, f.HWPID, uint8(f.ErrN), len(f.PData))
	}
	return fmt.Sprintf("request nadr=%d pnum=0x%02x pcmd=0x%02x hwpid=0x%04x pdata=%d bytes",
		f.NADR, f.PNUM, f.PCMD, f.HWPID, len(f.PData))
}

// IsReset reports whether f is the coordinator's asynchronous reset message
// (NADR 0, PNUM 0xFF, PCMD 0x3F, async flag).
func (f *Frame) IsReset() bool {
	return f.Kind == KindAsync && f.NADR == AddrCoordinator && f.PNUM == PNUMEnumeration && f.PCMD == CmdGetPerInfo
}
