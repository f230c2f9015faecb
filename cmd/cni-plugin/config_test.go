package main

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"iotfabric","type":"iotfabric","network":"red"}`,
		`{"cniVersion":"1.1.0","name":"n","type":"iotfabric","socket":"/run/x.sock","mtu":1400,"namespaceNetworks":{"default":"red"}}`,
		`{"cniVersion":"1.0.0","name":"n","type":"iotfabric","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"lo"}],"ips":[{"address":"10.0.0.1/32","interface":0}]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"iotfabric","cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}`,
		`{"cniVersion":"1.1.0","socket":"rel"}`,
		`{"mtu":-1}`,
		`{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := parseConfig(data)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code == 0 || te.Msg == "" {
				t.Fatalf("not a CNI error with a code and a message: %#v", err)
			}
			return
		}
		// (NetConf's JSON is PluginConf's: its MarshalJSON is promoted.)
		b, err := json.Marshal(map[string]any{"cniVersion": conf.CNIVersion, "name": conf.Name, "socket": conf.Socket,
			"network": conf.Network, "mtu": conf.MTU, "timeoutSeconds": conf.TimeoutSeconds, "namespaceNetworks": conf.NamespaceNetworks})
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseConfig(b)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", b, err)
		}
		if again.Socket != conf.Socket || again.Network != conf.Network || again.MTU != conf.MTU || again.CNIVersion != conf.CNIVersion {
			t.Fatalf("round trip changed the configuration: %+v -> %+v", conf, again)
		}
	})
}

func TestParseConfigDefaults(t *testing.T) {
	conf, err := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"iotfabric"}`))
	if err != nil || conf.Socket != DefaultSocket || conf.TimeoutSeconds != 30 {
		t.Fatalf("%+v %v", conf, err)
	}
	for in, code := range map[string]uint{
		`{"name":"n"}`: types.ErrInvalidNetworkConfig,
		`{"cniVersion":"1.1.0","network":"bad name"}`:            types.ErrInvalidNetworkConfig,
		`{"cniVersion":"1.1.0","timeoutSeconds":9999}`:           types.ErrInvalidNetworkConfig,
		`{"cniVersion":"1.1.0","prevResult":{"cniVersion":"9"}}`: types.ErrDecodingFailure,
		`nope`: types.ErrDecodingFailure,
	} {
		_, err := parseConfig([]byte(in))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != code {
			t.Errorf("%s: %v, want code %d", in, err, code)
		}
	}
}
