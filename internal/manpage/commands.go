package manpage

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"time"
)

// Command is a binary the packages install and its page.
type Command struct {
	Binary  string // in the build (cmd/NAME)
	Name    string // as installed, and the page's name
	Section string
	Summary string
	SeeAlso []string
}

// Commands are the packaged binaries. The CNI plugin is installed as
// /usr/lib/cni/iotfabric and linked from /opt/cni/bin/iotfabric; its page
// is iotfabric-cni(8).
var Commands = []Command{
	{Binary: "controller", Name: "controller", Section: "8", Summary: "iotfabric controller: virtual networks, gateways, endpoints and the gRPC API",
		SeeAlso: []string{"iotfabricctl(1)", "vrouter-agent(8)"}},
	{Binary: "iotfabricctl", Name: "iotfabricctl", Section: "1", Summary: "drive an iotfabric controller through its API",
		SeeAlso: []string{"controller(8)"}},
	{Binary: "vrouter-agent", Name: "vrouter-agent", Section: "8", Summary: "program a gateway's overlay data plane into the Linux kernel",
		SeeAlso: []string{"iotfabric-cni(8)", "controller(8)", "ip(8)"}},
	{Binary: "cni-plugin", Name: "iotfabric-cni", Section: "8", Summary: "iotfabric CNI plugin: pods join iotfabric virtual networks",
		SeeAlso: []string{"vrouter-agent(8)"}},
	{Binary: "iqrf-collector", Name: "iqrf-collector", Section: "8", Summary: "carry IQRF sensor readings to Graphite and MQTT",
		SeeAlso: []string{"vrouter-agent(8)"}},
}

// FromBinary runs path --help and makes c's page of its output.
func FromBinary(c Command, path, version, date string) (Page, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "--help")
	cmd.Stdout, cmd.Stderr = &out, &out
	// The flag package exits 0 or 2 after printing the help; what counts is
	// that the binary printed it.
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		return Page{}, fmt.Errorf("%s --help: %w", path, err)
	}
	if out.Len() == 0 {
		return Page{}, fmt.Errorf("%s --help printed nothing", path)
	}
	return Page{Name: c.Name, Section: c.Section, Summary: c.Summary, Version: version, Date: date,
		Help: out.String(), SeeAlso: c.SeeAlso}, nil
}
