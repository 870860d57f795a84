package collective

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// Environment of a rank started by Launch (as torchrun's RANK, WORLD_SIZE
// and MASTER_ADDR); ConfigFromEnv reads it back.
const (
	EnvRank    = "HONE_RANK"
	EnvSize    = "HONE_WORLD_SIZE"
	EnvStore   = "HONE_STORE_ADDR"
	EnvSecret  = "HONE_COLLECTIVE_SECRET"
	EnvTimeout = "HONE_COLLECTIVE_TIMEOUT"
	// EnvListen is the address this rank's transport binds to (default
	// loopback): on several machines, the address on the private network.
	EnvListen = "HONE_COLLECTIVE_LISTEN"
)

// NewSecret returns a random shared secret for one run.
func NewSecret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ConfigFromEnv returns the config Launch gave this process, and false
// when the process was not started as a rank.
func ConfigFromEnv() (Config, bool, error) {
	if os.Getenv(EnvRank) == "" {
		return Config{}, false, nil
	}
	rank, err1 := strconv.Atoi(os.Getenv(EnvRank))
	size, err2 := strconv.Atoi(os.Getenv(EnvSize))
	if err := errors.Join(err1, err2); err != nil {
		return Config{}, true, fmt.Errorf("%s/%s: %w", EnvRank, EnvSize, err)
	}
	c := Config{Rank: rank, Size: size, StoreAddr: os.Getenv(EnvStore), Secret: os.Getenv(EnvSecret), ListenHost: os.Getenv(EnvListen)}
	if t := os.Getenv(EnvTimeout); t != "" {
		if c.Timeout, err1 = time.ParseDuration(t); err1 != nil {
			return c, true, fmt.Errorf("%s=%q: %w", EnvTimeout, t, err1)
		}
	}
	return c, true, c.Validate()
}

// RankOutput is what one launched rank wrote and how it ended.
type RankOutput struct {
	Rank   int
	Stdout string
	Err    error // the process's exit error, nil on success
}

// Launch runs size copies of exe args on this machine as the ranks of one
// group over loopback, hosting their rendezvous store, and waits for all
// of them. Each rank's stderr goes to logw (prefixed by nothing: ranks
// should say who they are). When one rank fails the others are given
// timeout to fail too (their collectives time out), then killed, so
// Launch never hangs on a broken group.
func Launch(ctx context.Context, exe string, args []string, env []string, size int, timeout time.Duration, logw io.Writer) ([]RankOutput, error) {
	secret := NewSecret()
	srv, err := ServeStore("127.0.0.1:0", secret, size, nil)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cmds := make([]*exec.Cmd, size)
	outs := make([]*bytes.Buffer, size)
	var logMu sync.Mutex
	for r := range cmds {
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Env = append(append(os.Environ(), env...), EnvRank+"="+strconv.Itoa(r), EnvSize+"="+strconv.Itoa(size),
			EnvStore+"="+srv.Addr(), EnvSecret+"="+secret, EnvTimeout+"="+timeout.String())
		outs[r] = &bytes.Buffer{}
		cmd.Stdout = outs[r]
		if logw != nil {
			cmd.Stderr = &lockedWriter{mu: &logMu, w: logw}
		}
		if err := cmd.Start(); err != nil {
			for _, c := range cmds[:r] {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
			return nil, fmt.Errorf("start rank %d: %w", r, err)
		}
		cmds[r] = cmd
	}
	res := make([]RankOutput, size)
	done := make(chan int, size)
	for r, c := range cmds {
		go func() {
			res[r].Rank, res[r].Err = r, c.Wait()
			done <- r
		}()
	}
	var killer *time.Timer
	var failed error
	for range size {
		r := <-done
		if res[r].Err != nil && failed == nil {
			failed = fmt.Errorf("rank %d: %w", r, res[r].Err)
			// The others should notice within their timeout; past that, stop them.
			killer = time.AfterFunc(timeout+10*time.Second, func() {
				for _, c := range cmds {
					_ = c.Process.Kill()
				}
			})
		}
	}
	if killer != nil {
		killer.Stop()
	}
	for r := range res {
		res[r].Stdout = outs[r].String()
	}
	return res, failed
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
