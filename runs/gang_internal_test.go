package runs

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"hone/collective"
	"hone/store"
)

func TestResolveCollectiveAddr(t *testing.T) {
	for _, tc := range []struct {
		in, host string
		port     int
		err      string
	}{
		{"", "127.0.0.1", 0, ""},
		{"10.0.0.5", "10.0.0.5", 0, ""},
		{"10.0.0.5:29500", "10.0.0.5", 29500, ""},
		{"node-a.internal:0", "node-a.internal", 0, ""},
		{"lo", "127.0.0.1", 0, ""}, // an interface: its IPv4 address
		{":29500", "", 0, "name the host"},
		{"0.0.0.0", "", 0, "not every network"},
		{"10.0.0.5:http", "", 0, "is not a number"},
	} {
		host, port, err := ResolveCollectiveAddr(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("%q = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

// A rank waiting for a rendezvous gives it up as soon as it is told to (the
// rendezvous yielded or closed), long before the rendezvous timeout: rank
// 0 waiting on its own store for a rank that never comes, and a rank whose
// rank 0's store is gone.
func TestConnectUnlessStopsWaiting(t *testing.T) {
	s := &Service{cfg: Config{FetchPoll: 20 * time.Millisecond, Gang: GangConfig{RendezvousTimeout: time.Hour, CollectiveTimeout: time.Hour}}}
	if err := s.cfg.Gang.fill(); err != nil {
		t.Fatal(err)
	}
	secret := collective.NewSecret()
	srv, err := collective.ServeStoreAdmit("127.0.0.1:0", secret, 2, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	gone, _ := net.Listen("tcp", "127.0.0.1:0")
	gone.Close()
	for _, tc := range []struct {
		what  string
		rank  int
		store string
	}{{"rank 0, rank 1 never comes", 0, srv.Addr()}, {"rank 1, rank 0's store gone", 1, gone.Addr().String()}} {
		g := store.Gang{Run: "r", Epoch: 1, Size: 2, StoreAddr: tc.store, Secret: secret}
		calls := 0
		coll, stopped, err := s.connectUnless(context.Background(), g, tc.rank, func(context.Context) bool {
			calls++
			return calls == 3
		})
		if !stopped || coll != nil {
			t.Errorf("%s: connectUnless = %v, stopped %v, %v; want it stopped", tc.what, coll, stopped, err)
		}
	}
}
