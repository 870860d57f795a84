package runs

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"hone/train"
)

// trainBounded runs the trainer and returns what it returns, except that
// once ctx is done it waits at most Config.StopGrace: a trainer blocked in
// I/O that no context reaches (opening a FIFO nobody writes, reading a
// stalled network file system) must not keep a cancelled run STOPPING or a
// worker from shutting down. The abandoned trainer goroutine sees a done
// context whenever its I/O returns, and stops there.
func (s *Service) trainBounded(ctx context.Context, spec train.Spec, workDir string, obs train.Observer) (*train.Result, error) {
	type result struct {
		res *train.Result
		err error
	}
	done := make(chan result, 1) // buffered: an abandoned trainer never blocks on it
	go func() {
		defer func() {
			// In its own goroutine, a panic would crash the process: fail
			// the run instead, as Work does for one on its own goroutine.
			if p := recover(); p != nil {
				s.log.Error("panic while training", "dir", workDir, "panic", p, "stack", string(debug.Stack()))
				done <- result{nil, fmt.Errorf("internal error: %v", p)}
			}
		}()
		res, err := s.tr.Run(ctx, spec, workDir, obs)
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		return r.res, r.err
	case <-ctx.Done():
	}
	t := time.NewTimer(s.cfg.StopGrace)
	defer t.Stop()
	select {
	case r := <-done:
		return r.res, r.err
	case <-t.C:
		s.log.Warn("the trainer did not return within the stop grace period (blocked in I/O?); no longer waiting for it",
			"dir", workDir, "grace", s.cfg.StopGrace, "cause", context.Cause(ctx))
		return nil, fmt.Errorf("the trainer did not stop within %s (blocked in I/O): %w", s.cfg.StopGrace, context.Cause(ctx))
	}
}
