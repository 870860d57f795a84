package collective

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// A client with the secret is still refused when the rendezvous record
// names another address for its rank; the refused rank can join later
// from the right address.
func TestStoreAdmitChecksTheRanksAddress(t *testing.T) {
	hosts := map[int]string{0: "127.0.0.1", 1: "192.0.2.7"} // rank 1 is recorded elsewhere
	var mu sync.Mutex
	admit := func(rank int, remote net.Addr) error {
		mu.Lock()
		defer mu.Unlock()
		h, _, _ := net.SplitHostPort(remote.String())
		if h != hosts[rank] {
			return fmt.Errorf("rank %d must connect from %s, not %s", rank, hosts[rank], h)
		}
		return nil
	}
	srv, err := ServeStoreAdmit("127.0.0.1:0", secret, 2, nil, admit)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	if _, err := DialStore(ctx, srv.Addr(), secret, 1, 5*time.Second); err == nil || !strings.Contains(err.Error(), "must connect from 192.0.2.7") {
		t.Fatalf("rank 1 from the wrong address = %v, want a refusal", err)
	}
	a, err := DialStore(ctx, srv.Addr(), secret, 0, 5*time.Second)
	if err != nil {
		t.Fatalf("rank 0 from its recorded address: %v", err)
	}
	a.Close()
	mu.Lock()
	hosts[1] = "127.0.0.1"
	mu.Unlock()
	b, err := DialStore(ctx, srv.Addr(), secret, 1, 5*time.Second)
	if err != nil {
		t.Fatalf("rank 1 after the refusal, from its address: %v", err)
	}
	b.Close()
}
