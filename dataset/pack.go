package dataset

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Pack assigns examples of the given lengths to rows of capacity ctxLen by
// first-fit decreasing: longest first (ties by index), each into the first
// row with room, a new row when none has. It returns the example indices of
// each row. An example is never split across rows; lengths above ctxLen
// panic (apply the overlong policy first).
func Pack(lengths []int, ctxLen int) [][]int {
	order := make([]int, len(lengths))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return lengths[b] - lengths[a] })
	var rows [][]int
	t := newFitTree(16)
	for _, i := range order {
		l := lengths[i]
		if l > ctxLen || l <= 0 {
			panic(fmt.Sprintf("dataset: Pack: example %d has length %d, want 1..%d", i, l, ctxLen))
		}
		r := t.firstFit(l)
		if r < 0 {
			r = len(rows)
			rows = append(rows, nil)
			t = t.set(r, ctxLen)
		}
		rows[r] = append(rows[r], i)
		t = t.set(r, t.get(r)-l)
	}
	return rows
}

// fitTree is a max segment tree over the free space of rows, answering
// "first row with at least l free" in O(log rows).
type fitTree struct {
	size int
	v    []int
}

func newFitTree(size int) *fitTree { return &fitTree{size: size, v: make([]int, 2*size)} }

func (t *fitTree) get(i int) int { return t.v[t.size+i] }

func (t *fitTree) set(i, val int) *fitTree {
	if i >= t.size {
		g := newFitTree(2 * t.size)
		for k := 0; k < t.size; k++ {
			g.set(k, t.get(k))
		}
		t = g
	}
	n := t.size + i
	t.v[n] = val
	for n > 1 {
		n /= 2
		t.v[n] = max(t.v[2*n], t.v[2*n+1])
	}
	return t
}

func (t *fitTree) firstFit(l int) int {
	if t.v[1] < l {
		return -1
	}
	n := 1
	for n < t.size {
		if t.v[2*n] >= l {
			n = 2 * n
		} else {
			n = 2*n + 1
		}
	}
	return n - t.size
}

// buildRow lays the segments (stored tokens) side by side into one row of
// ctxLen tokens, padding the tail with pad (label IgnoreIndex, segment 0).
// Each segment's first label is kept as stored; the engine never scores it.
func buildRow(ctxLen, pad int, segs [][]uint32) Row {
	r := Row{InputIDs: make([]int, ctxLen), Labels: make([]int, ctxLen), SegmentIDs: make([]int, ctxLen)}
	p := 0
	for s, toks := range segs {
		for _, t := range toks {
			id := int(t &^ trainedBit)
			r.InputIDs[p] = id
			r.Labels[p] = IgnoreIndex
			if t&trainedBit != 0 {
				r.Labels[p] = id
			}
			r.SegmentIDs[p] = s + 1
			p++
		}
	}
	for ; p < ctxLen; p++ {
		r.InputIDs[p] = pad
		r.Labels[p] = IgnoreIndex
	}
	return r
}

// rng is SplitMix64: small, fast and fixed here so that shuffles are the
// same on every Go version.
type rng struct{ s uint64 }

func newRNG(seed, stream uint64) *rng {
	r := &rng{s: seed ^ bits.RotateLeft64(stream*0xd1342543de82ef95+1, 29)}
	r.next()
	return r
}

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// below returns a uniform integer in [0, n) (Lemire's method with rejection).
func (r *rng) below(n uint64) uint64 {
	threshold := -n % n
	for {
		hi, lo := bits.Mul64(r.next(), n)
		if lo >= threshold {
			return hi
		}
	}
}

// permutation returns a seeded random permutation of 0..n-1.
func permutation(n int, seed, stream uint64) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	r := newRNG(seed, stream)
	for i := n - 1; i > 0; i-- {
		j := int(r.below(uint64(i + 1)))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// evalStream and epochStream separate the random streams of one seed.
const (
	evalStream  = 0x65766131
	epochStream = 0x65706f63
)

// splitEval holds out round(frac*n) of n items chosen by seed (at least one
// when frac > 0 and n > 1, and never all). It returns the sorted train and
// eval indices.
func splitEval(n int, frac float64, seed uint64) (train, eval []int) {
	k := int(math.Round(frac * float64(n)))
	if frac > 0 && k == 0 && n > 1 {
		k = 1
	}
	if k >= n {
		k = n - 1
	}
	if k <= 0 {
		train = make([]int, n)
		for i := range train {
			train[i] = i
		}
		return train, nil
	}
	p := permutation(n, seed, evalStream)
	eval = slices.Clone(p[:k])
	train = slices.Clone(p[k:])
	slices.Sort(eval)
	slices.Sort(train)
	return train, eval
}
