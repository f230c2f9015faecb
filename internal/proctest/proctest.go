// Package proctest starts the test binary again as a child process (a daemon
// under test, killed with SIGKILL when the test ends or the parent dies) and
// waits for the line that says it is serving. It owns only that process's
// life; what the child runs is the caller's TestMain.
package proctest

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Proc is a child process started by Start.
type Proc struct {
	Cmd *exec.Cmd
	// Ready is what match returned for the first line it accepted (an
	// address, say).
	Ready string
	done  chan struct{}
}

// Start re-executes the test binary with env added to its environment (the
// caller's TestMain recognises it and runs the daemon), reads the child's
// stdout, or stderr when fromStderr, until match accepts a line, and fails the
// test if the child exits first or nothing matches within 30 s. The child is
// killed when the test ends.
func Start(t testing.TB, env []string, fromStderr bool, match func(line string) (string, bool)) *Proc {
	t.Helper()
	return StartWithin(t, 30*time.Second, env, fromStderr, match)
}

// StartWithin is Start with ready as the time the child has to say it is
// serving (a daemon that loads a large store first may need longer).
func StartWithin(t testing.TB, ready time.Duration, env []string, fromStderr bool, match func(line string) (string, bool)) *Proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out io.Reader
	var err error
	if fromStderr {
		out, err = cmd.StderrPipe()
	} else {
		cmd.Stderr = os.Stderr
		out, err = cmd.StdoutPipe()
	}
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	readyCh, started := make(chan string, 1), make(chan error, 1)
	go func() {
		// Pdeathsig fires when the forking thread exits: fork from a thread
		// held for the child's whole life.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(p.done)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := match(sc.Text()); ok {
				select {
				case readyCh <- v:
				default:
				}
			}
		}
		cmd.Wait()
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	select {
	case p.Ready = <-readyCh:
	case <-p.done:
		t.Fatal("child process exited before it was ready")
	case <-time.After(ready):
		t.Fatalf("child process was not ready within %s", ready)
	}
	return p
}

// Kill kills the child with SIGKILL (it cleans nothing up) and waits for it.
func (p *Proc) Kill() {
	p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}
