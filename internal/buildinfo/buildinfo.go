// Package buildinfo is the version, commit and build date stamped into every
// iotfabric binary, and the one line each binary prints for --version.
//
// `make release` sets the three variables with the linker:
//
//	-ldflags "-X github.com/iotfabric/iotfabric/internal/buildinfo.Version=1.2.3
//	          -X github.com/iotfabric/iotfabric/internal/buildinfo.Commit=<git revision>
//	          -X github.com/iotfabric/iotfabric/internal/buildinfo.Date=<commit date, RFC 3339>"
//
// The date is the commit's, not the clock's, so that two builds of one commit
// are byte-identical. A plain `go build` stamps nothing: the commit and date
// then come from the VCS information the Go toolchain records
// (debug.ReadBuildInfo: vcs.revision, vcs.time, vcs.modified) and the version
// is "dev".
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by the linker (-X); empty in a plain `go build`.
var (
	Version string
	Commit  string
	Date    string
)

// DevVersion is the version of a binary built without -X ...Version.
const DevVersion = "dev"

// Info describes one binary.
type Info struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"` // GOOS/GOARCH, with the ARM version for arm ("linux/arm/v7")
}

// Get returns the build information of the running binary, called name.
func Get(name string) Info {
	bi, _ := debug.ReadBuildInfo()
	return get(name, Version, Commit, Date, bi)
}

// get fills what the linker did not set from bi (nil: no build information).
func get(name, version, commit, date string, bi *debug.BuildInfo) Info {
	i := Info{Name: name, Version: version, Commit: commit, Date: date,
		GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if i.Commit == "" {
			i.Commit = settings["vcs.revision"]
			if i.Commit != "" && settings["vcs.modified"] == "true" {
				i.Commit += "-dirty"
			}
		}
		if i.Date == "" {
			i.Date = settings["vcs.time"]
		}
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version // go install module@version
		}
		if a := settings["GOARM"]; runtime.GOARCH == "arm" && a != "" {
			i.Platform += "/v" + a
		}
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
	}
	if i.Version == "" {
		i.Version = DevVersion
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	if i.Date == "" {
		i.Date = "unknown"
	}
	return i
}

// String is the --version line:
//
//	vrouter-agent 1.2.3 (commit 0123abcd..., built 2026-11-28T10:00:00Z, go1.26.8, linux/arm/v7)
func (i Info) String() string {
	return fmt.Sprintf("%s %s (commit %s, built %s, %s, %s)", i.Name, i.Version, i.Commit, i.Date, i.GoVersion, i.Platform)
}
