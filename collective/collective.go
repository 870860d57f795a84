// Package collective is the seam between training and the library that
// moves tensors between ranks (processes, usually one per machine): the
// Collective interface, which sits next to engine.Device, and the
// rendezvous store that ranks use to find each other.
//
// A backend (collective/gloo today over TCP; NCCL could sit behind the same
// interface for a GPU device) implements Collective. Buffers are host
// memory: the CPU device's buffers can be passed directly.
//
// Contract. Every rank calls the same collectives in the same order with
// the same sizes. A call blocks until it completes, its context's deadline
// passes, or Config.Timeout passes when the context has none; a peer that
// dies or never arrives therefore costs at most the timeout. Cancelling
// the context without a deadline does not interrupt a call in flight
// (the transport cannot be interrupted), the timeout does. After any error
// the Collective is broken (peers may be mid-transfer) and every later call
// returns ErrBroken; Close it and start a new one. Methods must not be
// called concurrently.
//
// Trust model: see the README section "Several machines". The rendezvous
// store admits only clients that present the run's shared secret, each
// rank at most once; the transport's own connections are not authenticated,
// so ranks must talk over a private network.
package collective

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Collective moves float32 buffers between the ranks of one group.
type Collective interface {
	// Rank is this process's index in [0, Size).
	Rank() int
	// Size is the number of ranks.
	Size() int
	// AllReduce replaces buf on every rank with the element-wise sum of
	// every rank's buf.
	AllReduce(ctx context.Context, buf []float32) error
	// ReduceScatter sums buf element-wise across ranks and leaves rank r's
	// part of the sum, counts[r] elements starting at the sum of
	// counts[:r], in place in buf; the rest of buf is scratch afterwards.
	// The counts sum to len(buf) and are the same on every rank.
	ReduceScatter(ctx context.Context, buf []float32, counts []int) error
	// AllGather writes every rank's in, in rank order, into out
	// (len(out) = Size·len(in)).
	AllGather(ctx context.Context, out, in []float32) error
	// Broadcast copies root's buf into every rank's buf.
	Broadcast(ctx context.Context, buf []float32, root int) error
	// Barrier returns once every rank has called it.
	Barrier(ctx context.Context) error
	// Close releases the connections. It does not wait for peers.
	Close() error
}

// DefaultTimeout bounds a collective call (and the rendezvous) when
// neither Config.Timeout nor the context says otherwise.
const DefaultTimeout = 60 * time.Second

// ErrBroken is returned by every call after one has failed.
var ErrBroken = errors.New("collective: an earlier call failed; close and start a new group")

// ErrTimeout wraps a call that did not complete in time, usually because
// a peer died or never joined.
var ErrTimeout = errors.New("collective: timed out")

// Config describes one rank of a group.
type Config struct {
	Rank, Size int
	// StoreAddr is the rendezvous store's host:port (hosted by rank 0,
	// see Serve).
	StoreAddr string
	// Secret is the run's shared secret; the store rejects clients
	// without it. At least 16 bytes.
	Secret string
	// ListenHost is the address (host name or IP, no port) this rank's
	// transport binds to and advertises to its peers; default 127.0.0.1.
	ListenHost string
	// Timeout bounds the rendezvous and each call; default DefaultTimeout.
	Timeout time.Duration
	// Prefix separates groups sharing one store (for example a retry of
	// the same run); default "hone".
	Prefix string
}

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	if c.Size < 1 {
		return fmt.Errorf("collective: size %d: need at least one rank", c.Size)
	}
	if c.Rank < 0 || c.Rank >= c.Size {
		return fmt.Errorf("collective: rank %d is outside [0, %d)", c.Rank, c.Size)
	}
	if c.StoreAddr == "" && c.Size > 1 {
		return errors.New("collective: no rendezvous store address (host:port of rank 0's store)")
	}
	if len(c.Secret) < 16 && c.Size > 1 {
		return errors.New("collective: the shared secret must have at least 16 bytes")
	}
	if c.ListenHost == "" {
		c.ListenHost = "127.0.0.1"
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Prefix == "" {
		c.Prefix = "hone"
	}
	return nil
}

// CallTimeout is the time a call may take: until ctx's deadline if it has
// one, else def.
func CallTimeout(ctx context.Context, def time.Duration) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return def
}

// Offsets returns the start of each rank's part for counts.
func Offsets(counts []int) []int {
	off := make([]int, len(counts)+1)
	for i, c := range counts {
		off[i+1] = off[i] + c
	}
	return off
}

// EvenCounts splits n elements over size ranks, the first n%size ranks
// getting one more.
func EvenCounts(n, size int) []int {
	c := make([]int, size)
	for i := range c {
		c[i] = n / size
		if i < n%size {
			c[i]++
		}
	}
	return c
}
