package gloo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"hone/collective"
)

// The tests run every rank as a separate process: the test binary re-runs
// itself with HONE_GLOO_TEST_SCENARIO set, and TestMain plays the rank.

const testSecret = "0123456789abcdef-test"

func TestMain(m *testing.M) {
	if sc := os.Getenv("HONE_GLOO_TEST_SCENARIO"); sc != "" {
		if err := playRank(sc); err != nil {
			fmt.Fprintln(os.Stderr, "rank error:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func envInt(k string) int { v, _ := strconv.Atoi(os.Getenv(k)); return v }

func playRank(scenario string) error {
	cfg := collective.Config{Rank: envInt("HONE_GLOO_TEST_RANK"), Size: envInt("HONE_GLOO_TEST_SIZE"),
		StoreAddr: os.Getenv("HONE_GLOO_TEST_STORE"), Secret: testSecret, Timeout: 3 * time.Second}
	if scenario == "rendezvous-death" && cfg.Rank == cfg.Size-1 {
		// Join the store, then die before connecting to anyone.
		if _, err := collective.DialStore(context.Background(), cfg.StoreAddr, cfg.Secret, cfg.Rank, cfg.Timeout); err != nil {
			return err
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	if scenario == "fake-peer" {
		cfg.Timeout = 8 * time.Second // the test probes the pair meanwhile
	}
	g, err := New(context.Background(), cfg)
	if scenario == "nojoin" || scenario == "rendezvous-death" || scenario == "fake-peer" {
		if err == nil {
			return errors.New("joined a group whose peer never started")
		}
		if !errors.Is(err, collective.ErrTimeout) {
			return fmt.Errorf("want a timeout, got %w", err)
		}
		fmt.Println("timeout:", err)
		return nil
	}
	if err != nil {
		return err
	}
	defer g.Close()
	switch scenario {
	case "ops":
		return checkOps(g)
	case "killed":
		if err := g.Barrier(context.Background()); err != nil {
			return err
		}
		if g.Rank() == g.Size()-1 {
			// Die mid-run as a crash would: no close, no goodbye.
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		buf := make([]float32, 1<<20)
		for i := 0; i < 100; i++ {
			if err := g.AllReduce(context.Background(), buf); err != nil {
				fmt.Println("failed as expected:", err)
				if err2 := g.AllReduce(context.Background(), buf); !errors.Is(err2, collective.ErrBroken) {
					return fmt.Errorf("after a failure: got %v, want ErrBroken", err2)
				}
				return nil
			}
		}
		return errors.New("allreduce kept succeeding with a dead peer")
	}
	return fmt.Errorf("unknown scenario %q", scenario)
}

// value is rank r's input element i, chosen so that sums are exact in fp32.
func value(r, i int) float32 { return float32((r+1)*1000 + i%997) }

func checkOps(g *Group) error {
	ctx := context.Background()
	r, n := g.Rank(), g.Size()
	// Not multiples of anything: ragged tails, and halves of one element
	// or none (two ranks split the sum in halves).
	for _, count := range []int{1<<20 + 3, 1, 2, 3} {
		buf := make([]float32, count)
		for i := range buf {
			buf[i] = value(r, i)
		}
		if err := g.AllReduce(ctx, buf); err != nil {
			return err
		}
		for i, v := range buf {
			var want float32
			for q := 0; q < n; q++ {
				want += value(q, i)
			}
			if v != want {
				return fmt.Errorf("allreduce of %d: element %d = %v, want %v", count, i, v, want)
			}
		}
	}

	// Uneven parts, a rank with none, one large buffer after smaller
	// ones (the scratch grows) and a small one after it: the scratch
	// kept is the largest part so far (what memory plans count).
	most := 0
	for _, part := range []func(q int) int{
		func(q int) int { return 1000 + 37*q },
		func(q int) int { return (q % 2) * 4099 },
		func(q int) int { return 1<<19 + 3*q },
		func(q int) int { return q + 1 },
	} {
		counts := make([]int, n)
		for q := range counts {
			counts[q] = part(q)
			most = max(most, counts[q])
		}
		off := collective.Offsets(counts)
		rs := make([]float32, off[n])
		for i := range rs {
			rs[i] = value(r, i)
		}
		if err := g.ReduceScatter(ctx, rs, counts); err != nil {
			return err
		}
		for i := off[r]; i < off[r+1]; i++ {
			var want float32
			for q := 0; q < n; q++ {
				want += value(q, i)
			}
			if rs[i] != want {
				return fmt.Errorf("reduce-scatter %v: element %d = %v, want %v", counts, i, rs[i], want)
			}
		}
		if got := g.ScratchBytes(); got != 4*int64(most) {
			return fmt.Errorf("reduce-scatter %v: the group keeps %d bytes, want the largest part's %d", counts, got, 4*most)
		}
	}

	// Inexact sums follow the documented order: part k's starts as rank
	// k+1's values, and each rank after it adds its own.
	inexact := func(q, i int) float32 { return (1 + float32(i%5)*1e-3) / float32(3+q+i%7) }
	counts := make([]int, n)
	for q := range counts {
		counts[q] = 100 + q
	}
	off := collective.Offsets(counts)
	rs := make([]float32, off[n])
	for i := range rs {
		rs[i] = inexact(r, i)
	}
	if err := g.ReduceScatter(ctx, rs, counts); err != nil {
		return err
	}
	for i := off[r]; i < off[r+1]; i++ {
		want := inexact((r+1)%n, i)
		for j := 2; j <= n; j++ {
			want = inexact((r+j)%n, i) + want
		}
		if rs[i] != want {
			return fmt.Errorf("reduce-scatter, inexact: element %d = %v, want %v (the ring's order)", i, rs[i], want)
		}
	}

	in := make([]float32, 4099)
	for i := range in {
		in[i] = value(r, i)
	}
	out := make([]float32, len(in)*n)
	if err := g.AllGather(ctx, out, in); err != nil {
		return err
	}
	for q := 0; q < n; q++ {
		for i := range in {
			if got := out[q*len(in)+i]; got != value(q, i) {
				return fmt.Errorf("allgather: rank %d element %d = %v, want %v", q, i, got, value(q, i))
			}
		}
	}

	root := n - 1
	bc := make([]float32, 5000)
	for i := range bc {
		bc[i] = value(r, i)
	}
	if err := g.Broadcast(ctx, bc, root); err != nil {
		return err
	}
	for i, v := range bc {
		if v != value(root, i) {
			return fmt.Errorf("broadcast: element %d = %v, want root %d's %v", i, v, root, value(root, i))
		}
	}
	if math.IsNaN(float64(bc[0])) {
		return errors.New("nan")
	}
	return g.Barrier(ctx)
}

// runRanks starts ranks `start` of a size-rank group playing scenario and
// waits for them, killing any still running after a generous watchdog so a
// hang fails the test instead of stalling it.
func runRanks(t *testing.T, scenario string, size int, start []int) []error {
	t.Helper()
	srv, err := collective.ServeStore("127.0.0.1:0", testSecret, size, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cmds := make([]*exec.Cmd, len(start))
	outs := make([]*bytes.Buffer, len(start))
	for i, r := range start {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "HONE_GLOO_TEST_SCENARIO="+scenario, "HONE_GLOO_TEST_RANK="+strconv.Itoa(r),
			"HONE_GLOO_TEST_SIZE="+strconv.Itoa(size), "HONE_GLOO_TEST_STORE="+srv.Addr())
		outs[i] = &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = outs[i], outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	errs := make([]error, len(start))
	watchdog := time.AfterFunc(2*time.Minute, func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
		}
	})
	defer watchdog.Stop()
	for i, c := range cmds {
		errs[i] = c.Wait()
		t.Logf("rank %d (%s): %v\n%s", start[i], scenario, errs[i], outs[i].String())
	}
	return errs
}

func TestCollectivesAcrossProcesses(t *testing.T) {
	for _, size := range []int{2, 3, 4} {
		t.Run(fmt.Sprintf("ranks=%d", size), func(t *testing.T) {
			ranks := make([]int, size)
			for i := range ranks {
				ranks[i] = i
			}
			for i, err := range runRanks(t, "ops", size, ranks) {
				if err != nil {
					t.Errorf("rank %d: %v", i, err)
				}
			}
		})
	}
}

// A pair's listening socket admits only the address its peer published:
// the test plays rank 1 at the store (publishing 127.0.0.1, as rank 0's
// own host), reads the address of rank 0's pair from the store, and dials
// it from 127.0.0.2 (also loopback, named by no rank), which must fail
// though the same dial reaches an unfiltered listener, and then from
// 127.0.0.1, which must connect. Rank 0 then times out waiting for rank
// 1's pairs, as with a peer that never joins.
func TestPairAdmitsOnlyItsPeersAddress(t *testing.T) {
	srv, err := collective.ServeStore("127.0.0.1:0", testSecret, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HONE_GLOO_TEST_SCENARIO=fake-peer", "HONE_GLOO_TEST_RANK=0", "HONE_GLOO_TEST_SIZE=2",
		"HONE_GLOO_TEST_STORE="+srv.Addr())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); cmd.Wait() }()
	sc, err := collective.DialStore(context.Background(), srv.Addr(), testSecret, 1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	host, err := waitGet(sc, "hone/host/0")
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Set("hone/host/1", host); err != nil {
		t.Fatal(err)
	}
	pair, err := waitGet(sc, "hone/pairs/0")
	if err != nil {
		t.Fatal(err)
	}
	// Gloo's tcp::Address: a sockaddr_storage (family in host order, then
	// a sockaddr_in's port and address in network order) and a sequence.
	if len(pair) < 8 || int(pair[0])|int(pair[1])<<8 != syscall.AF_INET {
		t.Fatalf("rank 0's pair address %x: want an IPv4 sockaddr", pair)
	}
	addr := net.JoinHostPort(net.IP(pair[4:8]).String(), strconv.Itoa(int(pair[2])<<8|int(pair[3])))
	from := func(ip string) *net.Dialer {
		return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if c, err := from("127.0.0.2").Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatalf("control: 127.0.0.2 cannot reach an unfiltered listener: %v", err)
	} else {
		c.Close()
	}
	if c, err := from("127.0.0.2").Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("a connection from 127.0.0.2, which no rank published, reached rank 0's pair at %s", addr)
	}
	c, err := from("127.0.0.1").Dial("tcp", addr)
	if err != nil {
		t.Errorf("rank 1's published address 127.0.0.1 cannot reach rank 0's pair at %s: %v", addr, err)
	} else {
		defer c.Close()
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("rank 0: %v\n%s", err, out.String())
	}
}

func waitGet(sc *collective.StoreClient, key string) ([]byte, error) {
	if err := sc.Wait([]string{key}, 10*time.Second); err != nil {
		return nil, err
	}
	return sc.Get(key)
}

func TestRendezvousTimesOutWhenAPeerNeverJoins(t *testing.T) {
	// Rank 1 of 2 never starts: rank 0 must give up with a timeout.
	if errs := runRanks(t, "nojoin", 2, []int{0}); errs[0] != nil {
		t.Errorf("rank 0: %v", errs[0])
	}
}

func TestPeerDyingInTheRendezvousFailsTheOthers(t *testing.T) {
	errs := runRanks(t, "rendezvous-death", 3, []int{0, 1, 2})
	for r := 0; r < 2; r++ {
		if errs[r] != nil {
			t.Errorf("rank %d: %v", r, errs[r])
		}
	}
}

func TestKilledPeerFailsTheOthers(t *testing.T) {
	errs := runRanks(t, "killed", 3, []int{0, 1, 2})
	for r := 0; r < 2; r++ {
		if errs[r] != nil {
			t.Errorf("rank %d: %v", r, errs[r])
		}
	}
	var ee *exec.ExitError
	if !errors.As(errs[2], &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("rank 2 should have died of SIGKILL, got %v", errs[2])
	}
}
