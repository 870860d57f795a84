package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/client"
)

func TestETAText(t *testing.T) {
	now := time.Now()
	past, future := now.Add(-3*time.Minute), now.Add(90*time.Second)
	for _, tc := range []struct {
		run  client.Run
		want string
	}{
		{client.Run{Status: client.StatusRunning, EstimatedEndAt: &past}, ", ETA 0s"},
		{client.Run{Status: client.StatusRunning, EstimatedEndAt: &future}, ", ETA 1m30s"},
		{client.Run{Status: client.StatusRunning}, ""},
	} {
		if got := etaText(&tc.run, now); got != tc.want {
			t.Errorf("etaText(end %v from now) = %q, want %q", tc.run.EstimatedEndAt, got, tc.want)
		}
	}
}

// TestListJSONEmpty: a script reading `hone runs list --json` gets [] from
// a server without runs, not null.
func TestListJSONEmpty(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	serve := serveCmd()
	serve.SetArgs([]string{"--home", filepath.Join(dir, "home"), "--data-root", dir, "--addr", addr})
	done := make(chan error, 1)
	go func() { done <- serve.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hone serve: %v", err)
		}
	}()
	c, _ := client.New(client.Config{Server: "http://" + addr})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := c.ListRuns(ctx, client.ListRunsOptions{}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("hone serve did not answer: %v", err)
		}
	}
	for _, args := range [][]string{{"list", "--json"}, {"list", "--json", "--all"}} {
		var out bytes.Buffer
		runs := runsCmd()
		runs.SetOut(&out)
		runs.SetArgs(append(args, "--server", "http://"+addr))
		if err := runs.ExecuteContext(ctx); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out.String()); got != "[]" {
			t.Errorf("hone runs %s = %q, want []", strings.Join(args, " "), got)
		}
	}
}
