package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envMain makes the test binary run main with its arguments (TestMain).
const envMain = "HONE_TEST_MAIN"

// The first SIGTERM cancels the command's context and says that a second
// one exits at once; the second ends the process by the signal even when
// the command's work does not look at its context (as a long training
// step's products do not): the test binary plays such a command.
func TestSecondSignalExits(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envMain+"=stuck")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	defer cmd.Process.Kill()
	// waitFor reads stderr up to a line containing s.
	waitFor := func(s string) {
		t.Helper()
		timeout := time.After(time.Minute) // only for a failure
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the command ended before printing %q: %v", s, <-done)
				}
				t.Log(l)
				if strings.Contains(l, s) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q on stderr after a minute", s)
			}
		}
	}
	waitFor("working") // the signals are being watched
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor("a second interrupt")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines { // keep the pipe drained
		}
	}()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("the command exited with %v, want killed by SIGTERM", err)
		}
		ws, ok := ee.Sys().(syscall.WaitStatus)
		if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("the command ended with %v, want killed by SIGTERM", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the command still runs 60 s after the second SIGTERM")
	}
}
