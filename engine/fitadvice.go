package engine

import (
	"fmt"
	"strings"
)

// FitError is Fit's refusal of a run that does not fit: the plan's
// numbers and the settings that would fit. Callers that know of more
// (nodes that shard the state) add to Fits before they wrap it.
type FitError struct {
	Need, Avail  int64 // the plan's peak with every saving; the memory available
	Rows, Tokens int   // per micro-batch
	Params       int64
	// Fits names the settings that would fit, each with the memory it
	// plans (empty: none that Fit knows of).
	Fits []string
}

func (e *FitError) Error() string {
	fits := "a smaller model or a machine with more memory"
	if len(e.Fits) > 0 {
		fits = strings.Join(e.Fits, ", or ")
	}
	return fmt.Sprintf("not enough memory: training needs about %.1f GiB (%d rows × %d tokens, %d parameters, with the savings above) and %.1f GiB is available (%.1f GiB usable); what fits: %s",
		gib(e.Need), e.Rows, e.Tokens, e.Params, gib(e.Avail), gib(MemoryBudget(e.Avail)), fits)
}

// MaxShardRanks bounds RanksNeeded's search.
const MaxShardRanks = 4096

// RanksNeeded is the fewest ranks n, from n = from up to MaxShardRanks,
// whose rank fits avail with the parameters, gradients and moments
// sharded over n (Options.ShardRanks; n = 1 is the unsharded state),
// rows(n) rows per micro-batch of T tokens and Fit's savings, and that
// rank's plan; 0 when none does. rows returns 0 for an n the caller
// cannot run. A rank's state shrinks as n grows while its activations
// do not, so the search doubles n up to the first that fits and then
// looks for the fewest below it.
func (c *Config) RanksNeeded(dev Device, opts Options, T int, avail int64, from int, rows func(n int) int) (int, int64) {
	try := func(n int) (int64, bool) {
		B := rows(n)
		if B <= 0 {
			return 0, false
		}
		o := opts
		o.ShardRanks, o.Rank = 0, nil // n ranks shard everything, 1 nothing
		if n > 1 {
			o.ShardRanks = n
		}
		_, _, need, ok := c.fit(dev, o, B, T, avail)
		return need, ok
	}
	from = max(from, 1)
	lo, hi := from-1, 0 // the fewest that fits is in (lo, hi]
	for n := from; n <= MaxShardRanks; n = max(2*n, n+1) {
		if _, ok := try(n); ok {
			hi = n
			break
		}
		lo = n
	}
	if hi == 0 {
		// The last power tried may be short of the bound.
		if _, ok := try(MaxShardRanks); !ok {
			return 0, 0
		}
		hi = MaxShardRanks
	}
	for n := lo + 1; n <= hi; n++ {
		if need, ok := try(n); ok {
			return n, need
		}
	}
	return 0, 0 // not reached: hi fits
}

// MemoryBudget is the bytes training may plan to use out of avail: 10% and
// at least 2 GiB stay for everything else on the machine.
func MemoryBudget(avail int64) int64 { return min(avail/10*9, avail-2<<30) }

// fits reports whether opts at B×T fit avail after Fit's savings.
func (c *Config) fits(dev Device, opts Options, B, T int, avail int64) bool {
	_, _, _, ok := c.fit(dev, opts, B, T, avail)
	return ok
}

// LongestContext is the longest row, at most maxT tokens, whose training
// at B rows fits avail bytes with the savings Fit turns on (0 when not even
// 2 tokens fit). Memory grows with T, so a bisection finds it.
func (c *Config) LongestContext(dev Device, opts Options, B, maxT int, avail int64) int {
	if c.fits(dev, opts, B, maxT, avail) {
		return maxT
	}
	if !c.fits(dev, opts, B, 2, avail) {
		return 0
	}
	lo, hi := 2, maxT // lo fits, hi does not
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if c.fits(dev, opts, B, mid, avail) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// fitAdvice names the settings that would make training at B×T fit avail,
// each with the memory it plans, for the error that refuses a run: a LoRA
// adapter instead of full fine-tuning (at B rows, else at one), fewer rows
// per micro-batch, and the longest row that fits.
func (c *Config) fitAdvice(dev Device, opts Options, B, T int, avail int64) []string {
	var tips []string
	if opts.LoRA == nil {
		lo := opts
		lo.LoRA = &LoRAConfig{Rank: 16, Alpha: 32, Targets: LoRATargets}
		lo.FrozenBF16 = opts.BF16 && !c.MoE()
		switch {
		case c.fits(dev, lo, B, T, avail):
			tips = append(tips, fmt.Sprintf("method lora (rank 16: %.1f GiB)", gib(c.FittedMemory(dev, lo, B, T, avail))))
		case B > 1 && c.fits(dev, lo, 1, T, avail):
			tips = append(tips, fmt.Sprintf("method lora at 1 row per micro-batch (rank 16: %.1f GiB)", gib(c.FittedMemory(dev, lo, 1, T, avail))))
		}
	}
	if B > 1 && c.fits(dev, opts, 1, T, avail) {
		tips = append(tips, fmt.Sprintf("1 row per micro-batch with gradient accumulation (%.1f GiB)", gib(c.FittedMemory(dev, opts, 1, T, avail))))
	}
	if n := c.LongestContext(dev, opts, 1, T, avail); n > 0 {
		tips = append(tips, fmt.Sprintf("context length %d at 1 row (%.1f GiB)", n, gib(c.FittedMemory(dev, opts, 1, n, avail))))
	}
	return tips
}

// FittedMemory is the plan's peak after the savings Fit turns on for avail.
func (c *Config) FittedMemory(dev Device, opts Options, B, T int, avail int64) int64 {
	_, _, need, _ := c.fit(dev, opts, B, T, avail)
	return need
}
