package client_test

import (
	"testing"
	"time"

	"hone/client"
)

func TestRemaining(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	for _, tc := range []struct {
		name   string
		run    client.Run
		want   time.Duration
		wantOK bool
	}{
		{"ahead", client.Run{Status: client.StatusRunning, EstimatedEndAt: at(90 * time.Second)}, 90 * time.Second, true},
		{"overdue", client.Run{Status: client.StatusRunning, EstimatedEndAt: at(-5 * time.Minute)}, 0, true},
		{"no estimate", client.Run{Status: client.StatusRunning}, 0, false},
		{"finished", client.Run{Status: client.StatusCompleted, EstimatedEndAt: at(time.Minute)}, 0, false},
	} {
		got, ok := tc.run.Remaining(now)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: Remaining() = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}
