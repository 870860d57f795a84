package storetest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// PrivatePostgres is a PostgreSQL server of one test, in its own data
// directory on its own port, so the test may stop and start it (a database
// outage) without disturbing the shared one of HONE_TEST_PG_DSN.
type PrivatePostgres struct {
	DSN  string
	bin  string
	data string
	port int
	t    testing.TB
}

// StartPrivatePostgres initialises and starts a private PostgreSQL from
// the installed server binaries (/usr/lib/postgresql/*/bin, which
// scripts/postgres.sh installs); it is stopped and removed when the test
// ends. As root the server runs as the postgres user, as PostgreSQL requires.
func StartPrivatePostgres(t testing.TB) *PrivatePostgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		t.Fatal("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: run scripts/postgres.sh")
	}
	sort.Strings(bins)
	p := &PrivatePostgres{bin: filepath.Dir(bins[len(bins)-1]), t: t}
	dir, err := os.MkdirTemp("", "hone-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p.data = filepath.Join(dir, "data")
	if err := os.Mkdir(p.data, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, PostgreSQL needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{dir, p.data} {
			if err := os.Chown(d, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	p.run("initdb", "-D", p.data, "-U", "hone", "--auth=trust", "-E", "UTF8", "--no-sync")
	p.Start()
	t.Cleanup(func() { p.ctl("stop", "-m", "immediate") })
	p.DSN = fmt.Sprintf("postgres://hone@127.0.0.1:%d/postgres?sslmode=disable", p.port)
	return p
}

// Start starts the server and waits until it accepts connections.
func (p *PrivatePostgres) Start() {
	p.t.Helper()
	if err := p.ctl("start", "-w", "-l", filepath.Join(p.data, "server.log"), "-o",
		fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", p.port, p.data)); err != nil {
		log, _ := os.ReadFile(filepath.Join(p.data, "server.log"))
		p.t.Fatalf("start private PostgreSQL: %v\n%s", err, log)
	}
}

// Stop shuts the server down at once (open connections are dropped).
func (p *PrivatePostgres) Stop() {
	p.t.Helper()
	if err := p.ctl("stop", "-w", "-m", "fast"); err != nil {
		p.t.Fatalf("stop private PostgreSQL: %v", err)
	}
}

func (p *PrivatePostgres) ctl(args ...string) error {
	return p.cmd("pg_ctl", append([]string{"-D", p.data}, args...)...).Run()
}

func (p *PrivatePostgres) run(name string, args ...string) {
	p.t.Helper()
	if out, err := p.cmd(name, args...).CombinedOutput(); err != nil {
		p.t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

func (p *PrivatePostgres) cmd(name string, args ...string) *exec.Cmd {
	path := filepath.Join(p.bin, name)
	if os.Getuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}
