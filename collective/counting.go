package collective

import (
	"context"
	"sync"
)

// Traffic is what one rank handed a Collective: per operation, its calls
// and the bytes of the buffers they moved (AllReduce, ReduceScatter and
// Broadcast: the buffer; AllGather: the gathered output, Size times the
// input). These are the payloads at the interface, the same on every
// rank; the bytes a backend puts on the wire follow from them and its
// algorithms (bench's scaling model).
type Traffic struct {
	AllReduce     OpTraffic `json:"allreduce"`
	ReduceScatter OpTraffic `json:"reduce_scatter"`
	AllGather     OpTraffic `json:"allgather"`
	Broadcast     OpTraffic `json:"broadcast"`
}

// OpTraffic is one operation's calls and payload bytes.
type OpTraffic struct {
	Calls int64 `json:"calls"`
	Bytes int64 `json:"bytes"`
}

func (o *OpTraffic) add(floats int) { o.Calls++; o.Bytes += 4 * int64(floats) }

// Sub is t minus u, operation by operation.
func (t Traffic) Sub(u Traffic) Traffic {
	sub := func(a, b OpTraffic) OpTraffic { return OpTraffic{a.Calls - b.Calls, a.Bytes - b.Bytes} }
	return Traffic{sub(t.AllReduce, u.AllReduce), sub(t.ReduceScatter, u.ReduceScatter), sub(t.AllGather, u.AllGather), sub(t.Broadcast, u.Broadcast)}
}

// Counting is a Collective that counts the traffic it forwards to another.
type Counting struct {
	Collective
	mu sync.Mutex
	t  Traffic
}

// NewCounting wraps c.
func NewCounting(c Collective) *Counting { return &Counting{Collective: c} }

// Traffic is the traffic so far.
func (c *Counting) Traffic() Traffic {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// count adds a call; the lock because a Reducer's goroutine and the
// caller's may each hold the group in turn.
func (c *Counting) count(op *OpTraffic, floats int) {
	c.mu.Lock()
	op.add(floats)
	c.mu.Unlock()
}

func (c *Counting) AllReduce(ctx context.Context, buf []float32) error {
	c.count(&c.t.AllReduce, len(buf))
	return c.Collective.AllReduce(ctx, buf)
}

func (c *Counting) ReduceScatter(ctx context.Context, buf []float32, counts []int) error {
	c.count(&c.t.ReduceScatter, len(buf))
	return c.Collective.ReduceScatter(ctx, buf, counts)
}

func (c *Counting) AllGather(ctx context.Context, out, in []float32) error {
	c.count(&c.t.AllGather, len(out))
	return c.Collective.AllGather(ctx, out, in)
}

func (c *Counting) Broadcast(ctx context.Context, buf []float32, root int) error {
	c.count(&c.t.Broadcast, len(buf))
	return c.Collective.Broadcast(ctx, buf, root)
}
