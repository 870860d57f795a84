package runs_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/catalog"
	"hone/client"
	"hone/modelref"
	"hone/runs"
	"hone/server"
	"hone/store"
	"hone/store/storetest"
)

// A 2-node run whose rank 1 joins the rendezvous record but never
// connects (its worker died): rank 0 gives up after the rendezvous timeout
// with an event naming that rank and its host, and the run goes back to
// the queue. Meanwhile a client with the run's secret that claims rank 1
// from an address the record does not name is refused by the store.
func TestGangRendezvousTimeoutAndStrangers(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	home, data, model := fixture(t)
	ctx := context.Background()
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	var svc *runs.Service
	res, _ := modelref.New(modelref.Config{HFHome: filepath.Join(home, "hf"), Catalog: cat,
		Confine: func(p string) (string, error) { return svc.Confine(p) }})
	svc, err = runs.New(ctx, runs.Config{Store: st, Catalog: cat, Models: res, Home: home, DataRoots: []string{data}, Work: true,
		FetchPoll: 50 * time.Millisecond, Gang: runs.GangConfig{RendezvousTimeout: 2 * time.Second, CollectiveTimeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Stop(ctx) })
	srv, _ := server.New(server.Config{Runs: svc, Catalog: cat})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	c, _ := client.New(client.Config{Server: ts.URL})
	for _, n := range []string{"main", "main.demo"} {
		if err := c.CreateCatalog(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	// A second worker that worked the queue and died.
	if err := st.SeeWorker(ctx, store.Worker{ID: "ghost", Host: "127.0.0.1", StartedAt: time.Now(), SeenAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	req := request(data, model)
	req.Nodes, req.GradAccum = 2, 2
	run, err := c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var g store.Gang
	for deadline := time.Now().Add(time.Minute); ; {
		gs, err := st.OpenGangs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) == 1 {
			g = gs[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no open rendezvous")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ok, err := st.JoinRank(ctx, store.Rank{Run: g.Run, Epoch: g.Epoch, Rank: 1, Worker: "ghost", Host: "127.0.0.1", JoinedAt: time.Now()}); err != nil || !ok {
		t.Fatalf("JoinRank = %v, %v", ok, err)
	}
	// The right secret from the wrong address (127.0.0.2 is loopback too).
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", g.StoreAddr)
	if err != nil {
		t.Fatal(err)
	}
	hello, _ := json.Marshal(map[string]any{"op": "hello", "secret": g.Secret, "rank": 1})
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write(append(hello, '\n'))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if !strings.Contains(line, "recorded on host 127.0.0.1, not 127.0.0.2") {
		t.Errorf("store's answer to rank 1 from 127.0.0.2: %q, want a refusal", line)
	}

	deadline := time.Now().Add(time.Minute)
	for {
		r, err := c.GetRun(ctx, run.Name)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range r.Events {
			found = found || e.Type == client.StatusQueued && strings.Contains(e.Message, "rendezvous did not complete within 2s") &&
				strings.Contains(e.Message, "joined but did not connect: rank 1 (worker ghost on 127.0.0.1)")
			if strings.Contains(e.Message, g.Secret) || strings.Contains(e.Message, g.StoreAddr) {
				t.Fatalf("event shows the rendezvous secret or store: %q", e.Message)
			}
		}
		if found {
			if r.Status == client.StatusCompleted || r.Status == client.StatusFailed {
				t.Fatalf("run %s after a failed rendezvous", r.Status)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rendezvous-timeout event: %+v", r.Events)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
