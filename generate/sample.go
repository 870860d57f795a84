package generate

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
)

// Sample draws one token id from logits as HF's sampling does: temperature,
// then top-k, then top-p (nucleus) filtering.
//
// It never sorts the vocabulary. Without top-k or top-p it draws over all
// tokens in id order. With them, the candidates are ordered (logit
// descending, id ascending on ties) only as far as the filters and the
// draw reach, taking bands of ever lower logits one at a time, so that a
// peaked distribution sorts a handful of tokens; the draw then walks the
// kept candidates in that order. Either way each token is drawn with the
// probability a full sort gives it.
func Sample(logits []float32, p Params, r *rand.Rand) int {
	if p.Temperature <= 0 || len(logits) == 1 {
		return argmax(logits)
	}
	n := len(logits)
	top := float64(logits[argmax(logits)]) / p.Temperature
	prob := func(id int) float64 { return math.Exp(float64(logits[id])/p.Temperature - top) }
	k := n
	if p.TopK > 0 && p.TopK < n {
		k = p.TopK
	}
	nucleus := p.TopP > 0 && p.TopP < 1
	if k == n && !nucleus {
		buf := probBufs.Get().(*[]float64)
		defer probBufs.Put(buf)
		if cap(*buf) < n {
			*buf = make([]float64, n)
		}
		probs := (*buf)[:n]
		var total float64
		for id := range logits {
			probs[id] = prob(id)
			total += probs[id]
		}
		u := r.Float64() * total
		for id, q := range probs {
			if u -= q; u < 0 {
				return id
			}
		}
		return n - 1
	}

	o := &ordered{logits: logits, temp: p.Temperature, top: top}
	// The normaliser: over the top k, in order, as the full sort sums it.
	var sum float64
	if k == n {
		for id := range logits {
			sum += prob(id)
		}
	} else {
		o.reach(k)
		for _, c := range o.c[:k] {
			sum += c.p
		}
	}
	keep := k
	if nucleus {
		var cum float64
		for i := 0; i < k && o.reach(i+1); i++ {
			if cum += o.c[i].p / sum; cum >= p.TopP {
				keep = i + 1
				break
			}
		}
	}
	if o.reach(keep); keep > len(o.c) { // NaN logits never rank
		keep = len(o.c)
	}
	if keep == 0 {
		return argmax(logits)
	}
	var total float64
	for _, c := range o.c[:keep] {
		total += c.p
	}
	u := r.Float64() * total
	for _, c := range o.c[:keep] {
		if u -= c.p; u < 0 {
			return c.id
		}
	}
	return o.c[keep-1].id
}

// probBufs hold the probabilities of one draw over the vocabulary.
var probBufs = sync.Pool{New: func() any { return new([]float64) }}

func argmax(logits []float32) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return best
}

// cand is a token and its unnormalised probability exp(l - top), l being
// its logit over the temperature.
type cand struct {
	id int
	l  float64
	p  float64
}

// ordered yields the tokens in order of logit (descending, id ascending on
// ties) by bands: each band holds the tokens whose scaled logit lies within
// a widening distance of the top one but outside the earlier bands, so
// every token of a band ranks below every token before it, and only the
// band is sorted.
type ordered struct {
	logits []float32
	temp   float64
	top    float64
	c      []cand  // the tokens ordered so far
	done   float64 // the bands so far hold every token with l >= top-done
	next   float64 // the distance of the highest token below the bands
	all    bool
}

// reach orders at least m tokens (fewer when the vocabulary is smaller)
// and reports whether m were reached.
func (o *ordered) reach(m int) bool {
	for len(o.c) < m && !o.all {
		// Doubling keeps the scans few; next makes each band non-empty.
		width := max(2, 1.5*o.done, o.next)
		lo, hi := o.top-width, o.top-o.done
		start, below, anyBelow := len(o.c), math.Inf(-1), false
		for id, v := range o.logits {
			switch l := float64(v) / o.temp; {
			case l >= lo && (o.done == 0 || l < hi):
				o.c = append(o.c, cand{id, l, math.Exp(l - o.top)})
			case l < lo:
				below, anyBelow = max(below, l), true
			}
		}
		slices.SortFunc(o.c[start:], func(a, b cand) int {
			if a.l != b.l {
				if a.l > b.l {
					return -1
				}
				return 1
			}
			return a.id - b.id
		})
		o.done, o.next, o.all = width, o.top-below, !anyBelow
	}
	return len(o.c) >= m
}
