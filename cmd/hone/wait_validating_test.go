package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// hone create --wait follows a run created PENDING (its large data is
// validated in the background): it prints the VALIDATING events and, when
// validation fails, exits non-zero with the bad record's file:line.
func TestWaitFollowsBackgroundValidation(t *testing.T) {
	polls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"name":"tiny-0a1b2c3d","status":"PENDING"}`)
			return
		}
		polls++
		events := `[{"id":1,"type":"PENDING","message":"run created"},{"id":2,"type":"VALIDATING","message":"validating 40.0 MiB of data"}`
		if polls == 1 {
			fmt.Fprintf(w, `{"name":"tiny-0a1b2c3d","status":"PENDING","events":%s]}`, events)
			return
		}
		msg := `input validation failed: big.jsonl:3: messages[0].role \"robot\"`
		fmt.Fprintf(w, `{"name":"tiny-0a1b2c3d","status":"FAILED","error":"%s","events":%s,{"id":3,"type":"FAILED","message":"%s"}]}`, msg, events, msg)
	}))
	defer srv.Close()
	cmd := createCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"--server", srv.URL, "--model", "m", "--train-data-path", "d.jsonl", "--register-to", "main.demo", "--wait"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "FAILED") || !strings.Contains(err.Error(), "big.jsonl:3") {
		t.Fatalf("hone create --wait on a run failing validation: err %v, want FAILED naming big.jsonl:3\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"tiny-0a1b2c3d PENDING", "VALIDATING validating 40.0 MiB of data"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
