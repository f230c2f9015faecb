package overlay

// This file holds the sysctls Set writes (forwarding, MPLS label space and
// input on tunnels).

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

// ensureSysctl writes /proc/sys/<key> in the namespace unless it was already
// written with that value by this manager.
func (m *Manager) ensureSysctlLocked(key, value string, fail func(error)) {
	if m.cur.sysctls[key] == value {
		return
	}
	if err := m.writeSysctlLocked(key, value); err != nil {
		fail(err)
		return
	}
	m.cur.sysctls[key] = value
}

func (m *Manager) writeSysctlLocked(key, value string) error {
	err := rtnl.InNamespace(m.ns, func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0)
	})
	if err != nil {
		return fmt.Errorf("overlay: sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

func (m *Manager) readSysctlLocked(key string) (string, error) {
	var v []byte
	err := rtnl.InNamespace(m.ns, func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + key)
		return err
	})
	return strings.TrimSpace(string(v)), err
}

func (m *Manager) ensurePlatformLabelsLocked(maxLabel uint32, fail func(error)) {
	const key = "net/mpls/platform_labels"
	if v, ok := m.cur.sysctls[key]; ok {
		if n, _ := strconv.ParseUint(v, 10, 32); uint32(n) > maxLabel {
			return
		}
	}
	v, err := m.readSysctlLocked(key)
	if err != nil {
		fail(fmt.Errorf("overlay: read net.mpls.platform_labels: %w", err))
		return
	}
	n, _ := strconv.ParseUint(v, 10, 32)
	if uint32(n) > maxLabel {
		m.cur.sysctls[key] = v
		return
	}
	want := uint32(DefaultPlatformLabels)
	if maxLabel >= want {
		want = maxLabel + 1
	}
	if err := m.writeSysctlLocked(key, strconv.FormatUint(uint64(want), 10)); err != nil {
		fail(err)
		return
	}
	m.cur.sysctls[key] = strconv.FormatUint(uint64(want), 10)
}

// ensureSysctlsLocked turns on forwarding and makes the MPLS label space
// large enough for the highest local label.
func (m *Manager) ensureSysctlsLocked(d *desired, fail func(error)) {
	m.ensureSysctlLocked("net/ipv4/ip_forward", "1", fail)
	if d.ipv6 && m.feat.IPv6 {
		m.ensureSysctlLocked("net/ipv6/conf/all/forwarding", "1", fail)
	}
	if m.feat.MPLS && d.maxLabel > 0 {
		m.ensurePlatformLabelsLocked(d.maxLabel, fail)
	}
}
