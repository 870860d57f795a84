package collective

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

const secret = "0123456789abcdef-store"

func TestStoreSetGetWait(t *testing.T) {
	srv, err := ServeStore("127.0.0.1:0", secret, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	a, err := DialStore(ctx, srv.Addr(), secret, 0, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := DialStore(ctx, srv.Addr(), secret, 1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := make(chan []byte, 1)
	go func() {
		v, err := b.Get("k") // blocks until a sets it
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	if err := a.Set("k", []byte("value")); err != nil {
		t.Fatal(err)
	}
	if v := <-got; string(v) != "value" {
		t.Errorf("Get(k) = %q, want %q", v, "value")
	}
	if err := a.Wait([]string{"k", "never"}, 50*time.Millisecond); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "never") {
		t.Errorf("Wait on a missing key = %v, want a timeout naming the key", err)
	}
}

func TestStoreAdmitsOnlyTheRunsRanks(t *testing.T) {
	srv, err := ServeStore("127.0.0.1:0", secret, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	if _, err := DialStore(ctx, srv.Addr(), "wrong-secret-0123456", 0, 5*time.Second); err == nil || !strings.Contains(err.Error(), "wrong secret") {
		t.Errorf("dial with a wrong secret = %v, want a rejection", err)
	}
	if _, err := DialStore(ctx, srv.Addr(), secret, 2, 5*time.Second); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("dial as rank 2 of 2 = %v, want a rejection", err)
	}
	a, err := DialStore(ctx, srv.Addr(), secret, 1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DialStore(ctx, srv.Addr(), secret, 1, 5*time.Second); err == nil || !strings.Contains(err.Error(), "already joined") {
		t.Errorf("second dial as rank 1 = %v, want a rejection", err)
	}
	a.Close()
}
