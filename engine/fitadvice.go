package engine

import (
	"fmt"
	"strings"
)

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
func (c *Config) fitAdvice(dev Device, opts Options, B, T int, avail int64) string {
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
	if len(tips) == 0 {
		return "a smaller model or a machine with more memory"
	}
	return strings.Join(tips, ", or ")
}

// FittedMemory is the plan's peak after the savings Fit turns on for avail.
func (c *Config) FittedMemory(dev Device, opts Options, B, T int, avail int64) int64 {
	_, _, need, _ := c.fit(dev, opts, B, T, avail)
	return need
}
