package rtnl

import (
	"encoding/binary"
	"testing"
)

// TestExtAckMessage: the kernel's extended-ack text is found after the echoed
// request, and a length field that does not fit the message gives "" instead
// of a panic, also where int is 32 bits wide (0x7ffffffd + 3 overflows there).
func TestExtAckMessage(t *testing.T) {
	ack := func(echoLen uint32, text string) nlmsg {
		b := make([]byte, 4+nlmsgHdrLen)
		binary.NativeEndian.PutUint32(b[4:], echoLen)
		attr := make([]byte, 4+len(text)+1)
		binary.NativeEndian.PutUint16(attr, uint16(len(attr)))
		binary.NativeEndian.PutUint16(attr[2:], nlmsgerrAttrMsg)
		copy(attr[4:], text)
		for len(attr)%4 != 0 {
			attr = append(attr, 0)
		}
		return nlmsg{Flags: nlmFAckTLVs, Data: append(b, attr...)}
	}
	if got := extAckMessage(ack(nlmsgHdrLen, "Nexthop id does not exist")); got != "Nexthop id does not exist" {
		t.Fatalf("valid ack: %q", got)
	}
	for _, l := range []uint32{0, nlmsgHdrLen - 1, 1000, 0x7ffffffd, 0x7fffffff, 0x80000000, 0xfffffffd, 0xffffffff} {
		if got := extAckMessage(ack(l, "x")); got != "" {
			t.Errorf("echoed length %#x: %q, want none", l, got)
		}
	}
}
