package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestStrictFails runs a test that lacks a program in a child process, once plain and
// once strict, and checks that the first skips and the second fails.
func TestStrictFails(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		RequireProgram(t, "iotfabric-no-such-program", "no-such-package")
		t.Fatal("RequireProgram returned for a missing program")
	}
	for _, strict := range []string{"0", "1"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStrictFails$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", StrictEnv+"="+strict)
		out, err := cmd.CombinedOutput()
		switch {
		case strict == "0" && (err != nil || !strings.Contains(string(out), "--- SKIP")):
			t.Errorf("plain: want a skip, got err %v:\n%s", err, out)
		case strict == "1" && (err == nil || !strings.Contains(string(out), "--- FAIL") || !strings.Contains(string(out), "no-such-package")):
			t.Errorf("strict: want a failure naming the package, got err %v:\n%s", err, out)
		}
	}
}

func TestRequireProgramFinds(t *testing.T) {
	if p := RequireProgram(t, "sh", "dash"); p == "" {
		t.Fatal("no path for sh")
	}
}
