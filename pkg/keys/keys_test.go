package keys

import (
	"net/netip"
	"testing"
)

func TestStreamKeys(t *testing.T) {
	for in, want := range map[string]string{"3f2a-12": "3f2a", "3f2a": "3f2a", "a-b": "a-b", "a-b-3": "a-b", "-3": "-3", "x-": "x-"} {
		if got := StreamInstance(in); got != want {
			t.Errorf("StreamInstance(%q) = %q, want %q", in, got, want)
		}
	}
	gw, stream, ok := StreamGateway(GatewayStream("gw", "3f2a-1"))
	if !ok || gw != "gw" || stream != "3f2a-1" {
		t.Errorf("StreamGateway = %q, %q, %v", gw, stream, ok)
	}
	if _, _, ok := StreamGateway(Gateway("gw")); ok {
		t.Error("StreamGateway accepted a gateway key")
	}
	if got := ControllerInstance(Controller("3f2a")); got != "3f2a" {
		t.Errorf("ControllerInstance = %q", got)
	}
}

func TestGatewayBlockIndexOf(t *testing.T) {
	p := netip.MustParsePrefix("10.1.0.16/28")
	gw, n, q, ok := GatewayBlockIndexOf(GatewayBlock("gw-1", "net", p))
	if !ok || gw != "gw-1" || n != "net" || q != p {
		t.Errorf("GatewayBlockIndexOf = %q, %q, %v, %v", gw, n, q, ok)
	}
	for _, k := range []string{Gateway("gw-1"), GatewayBlocks("gw-1"), GatewayBlockIndex + "/net/10.1.0.16/28", GatewayBlocks("gw-1") + "net/x"} {
		if _, _, _, ok := GatewayBlockIndexOf(k); ok {
			t.Errorf("GatewayBlockIndexOf(%q) accepted", k)
		}
	}
}
