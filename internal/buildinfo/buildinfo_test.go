package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestGetPrefersTheLinkerStamp(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.time", Value: "2026-01-01T00:00:00Z"}, {Key: "vcs.modified", Value: "true"},
		{Key: "GOARM", Value: "7"},
	}}
	for _, tc := range []struct {
		name                   string
		version, commit, date  string
		bi                     *debug.BuildInfo
		wantV, wantC, wantDate string
	}{
		{"stamped", "1.2.3", "def", "2026-11-28T10:00:00Z", bi, "1.2.3", "def", "2026-11-28T10:00:00Z"},
		{"plain go build", "", "", "", bi, "dev", "abc-dirty", "2026-01-01T00:00:00Z"},
		{"no build info", "", "", "", nil, "dev", "unknown", "unknown"},
		{"go install module@v", "", "", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "v0.4.0", "unknown", "unknown"},
	} {
		i := get("controller", tc.version, tc.commit, tc.date, tc.bi)
		if i.Version != tc.wantV || i.Commit != tc.wantC || i.Date != tc.wantDate || i.Name != "controller" {
			t.Errorf("%s: got %+v, want version %s commit %s date %s", tc.name, i, tc.wantV, tc.wantC, tc.wantDate)
		}
	}
	if s := get("controller", "1.2.3", "def", "d", nil).String(); s != "controller 1.2.3 (commit def, built d, "+runtime.Version()+", "+runtime.GOOS+"/"+runtime.GOARCH+")" {
		t.Errorf("String: %q", s)
	}
}
