package optim

import (
	"fmt"
	"math"
)

// Schedule is linear warmup to Peak, then linear or cosine decay to
// Peak*FinalMult at TotalSteps.
type Schedule struct {
	Peak        float64
	TotalSteps  int
	WarmupSteps int     // -1 = the default 2% of TotalSteps (at least 1)
	Decay       string  // "linear" (default), "cosine" or "constant"
	FinalMult   float64 // learning-rate multiplier reached at the end; default 0
}

// Validate reports a schedule that cannot be followed.
func (s Schedule) Validate() error {
	switch {
	case !(s.Peak > 0) || math.IsInf(s.Peak, 0):
		return fmt.Errorf("schedule: learning rate %g must be positive", s.Peak)
	case s.TotalSteps <= 0:
		return fmt.Errorf("schedule: total steps %d must be positive", s.TotalSteps)
	case s.FinalMult < 0 || s.FinalMult > 1:
		return fmt.Errorf("schedule: final multiplier %g must be in [0, 1]", s.FinalMult)
	case s.Decay != "" && s.Decay != "linear" && s.Decay != "cosine" && s.Decay != "constant":
		return fmt.Errorf("schedule: decay %q is not one of linear, cosine, constant", s.Decay)
	}
	return nil
}

func (s Schedule) warmup() int {
	if s.WarmupSteps >= 0 {
		return s.WarmupSteps
	}
	return max(1, int(math.Ceil(0.02*float64(s.TotalSteps))))
}

// LR returns the learning rate of 0-based optimizer step i. Warmup reaches
// Peak at its last step (the first step trains at Peak/warmup, never at 0).
func (s Schedule) LR(i int) float64 {
	w := s.warmup()
	if i < w {
		return s.Peak * float64(i+1) / float64(w)
	}
	if s.Decay == "constant" || s.TotalSteps <= w {
		return s.Peak
	}
	p := math.Min(1, float64(i-w)/float64(s.TotalSteps-w))
	mult := 1 - p
	if s.Decay == "cosine" {
		mult = 0.5 * (1 + math.Cos(math.Pi*p))
	}
	return s.Peak * (s.FinalMult + (1-s.FinalMult)*mult)
}
