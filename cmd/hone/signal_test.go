package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envMain makes the test binary run main with its arguments (TestMain).
const envMain = "HONE_TEST_MAIN"

// The first SIGTERM stops `hone bench train` gracefully and says that a
// second one exits at once; the second ends the process by the signal,
// in the middle of a long step rather than after it.
func TestSecondSignalExits(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join("..", "..", "bench", "configs", "llama-small.json")
	// Steps of 2048 tokens × 2 rows: seconds each here, far longer than
	// the signals take to arrive; 1000 of them, so only a signal ends it.
	cmd := exec.Command(exe, "bench", "train", "--config", cfg, "--seq", "2048", "--batch", "2", "--steps", "1000", "--threads", "1")
	cmd.Env = append(os.Environ(), envMain+"=1")
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
		timeout := time.After(5 * time.Minute) // only for a failure: steps take seconds
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("hone bench train ended before printing %q: %v", s, <-done)
				}
				t.Log(l)
				if strings.Contains(l, s) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q on stderr after 5 minutes", s)
			}
		}
	}
	waitFor("step 0 (warm-up)") // in the steps now, past the set-up
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
			t.Fatalf("hone bench train exited with %v, want killed by SIGTERM", err)
		}
		ws, ok := ee.Sys().(syscall.WaitStatus)
		if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("hone bench train ended with %v, want killed by SIGTERM", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("hone bench train still runs 60 s after the second SIGTERM")
	}
}
