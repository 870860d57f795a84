package optim

import (
	"fmt"
	"math"

	"hone/settings"
)

// Schedule is linear warmup to Peak over WarmupSteps, then linear, cosine or
// no decay to Peak*FinalMult at TotalSteps. The run's defaults (how many
// warmup steps, which decay) are package settings'; a Schedule is explicit.
type Schedule struct {
	Peak        float64
	TotalSteps  int
	WarmupSteps int     // 0: start at Peak
	Decay       string  // "linear" ("" too), "cosine" or "constant"
	FinalMult   float64 // learning-rate multiplier reached at the end
}

// Validate reports a schedule that cannot be followed.
func (s Schedule) Validate() error {
	if s.TotalSteps <= 0 {
		return fmt.Errorf("schedule: total steps %d must be positive", s.TotalSteps)
	}
	if s.WarmupSteps < 0 || s.WarmupSteps > s.TotalSteps {
		return fmt.Errorf("schedule: warmup steps %d must be in [0, total steps %d]", s.WarmupSteps, s.TotalSteps)
	}
	if err := settings.CheckLearningRate(s.Peak); err != nil {
		return err
	}
	if err := settings.CheckDecay(s.decay()); err != nil {
		return err
	}
	return settings.CheckFinalLRMult(s.FinalMult, s.decay())
}

func (s Schedule) decay() string {
	if s.Decay == "" {
		return settings.Decay
	}
	return s.Decay
}

// LR returns the learning rate of 0-based optimizer step i. Warmup reaches
// Peak at its last step (the first step trains at Peak/warmup, never at 0).
func (s Schedule) LR(i int) float64 {
	w := s.WarmupSteps
	if i < w {
		return s.Peak * float64(i+1) / float64(w)
	}
	if s.decay() == "constant" || s.TotalSteps <= w {
		return s.Peak
	}
	p := math.Min(1, float64(i-w)/float64(s.TotalSteps-w))
	mult := 1 - p
	if s.decay() == "cosine" {
		mult = 0.5 * (1 + math.Cos(math.Pi*p))
	}
	return s.Peak * (s.FinalMult + (1-s.FinalMult)*mult)
}

// String describes the schedule for a run's log.
func (s Schedule) String() string {
	d := s.decay() + " decay"
	switch s.decay() {
	case "constant":
		d = "then constant"
	default:
		d += fmt.Sprintf(" to %g×peak", s.FinalMult)
	}
	return fmt.Sprintf("peak lr %g, warmup %d of %d steps, %s", s.Peak, s.WarmupSteps, s.TotalSteps, d)
}
