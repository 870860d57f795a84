package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// hone create --wait draws the bar at the step a run reached: a run that
// FAILED at step 12 of 60 never shows 100%; a COMPLETED one does.
func TestWaitBarEndsAtTheStepReached(t *testing.T) {
	for _, tc := range []struct {
		status  string
		step    int
		want    string
		wantErr bool
	}{
		{"FAILED", 12, "12/60", true},
		{"STOPPED", 30, "30/60", true},
		{"COMPLETED", 60, "100%", false},
	} {
		t.Run(tc.status, func(t *testing.T) {
			polls := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if r.Method == http.MethodPost {
					w.WriteHeader(http.StatusCreated)
					fmt.Fprint(w, `{"name":"tiny-0a1b2c3d","status":"QUEUED"}`)
					return
				}
				polls++
				status, step := "RUNNING", tc.step-1
				if polls > 1 {
					status, step = tc.status, tc.step
				}
				fmt.Fprintf(w, `{"name":"tiny-0a1b2c3d","status":%q,"error":"boom","metrics":{"step":%d,"total_steps":60,"lr":0.001}}`, status, step)
			}))
			defer srv.Close()
			cmd := createCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs([]string{"--server", srv.URL, "--model", "m", "--train-data-path", "d.jsonl", "--register-to", "main.demo", "--wait"})
			err := cmd.Execute()
			if (err != nil) != tc.wantErr {
				t.Fatalf("hone create --wait on a %s run: err %v\n%s", tc.status, err, out.String())
			}
			got := out.String()
			if !strings.Contains(got, tc.want) {
				t.Errorf("a %s run at step %d/60: output lacks %q:\n%s", tc.status, tc.step, tc.want, got)
			}
			if tc.status != "COMPLETED" && (strings.Contains(got, "100%") || strings.Contains(got, "60/60")) {
				t.Errorf("a %s run at step %d/60 drew a full bar:\n%s", tc.status, tc.step, got)
			}
		})
	}
}
