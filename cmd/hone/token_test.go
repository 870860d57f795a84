package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	private := write("private", "0123456789abcdef0123\n", 0o600)
	crlf := write("crlf", "0123456789abcdef0123\r\n", 0o600)
	shared := write("shared", "0123456789abcdef0123", 0o644)
	empty := write("empty", "\n", 0o600)
	twoLines := write("two", "abc\ndef\n", 0o600)
	t.Setenv("HONE_TOKEN", "from-env")
	for _, tc := range []struct {
		name      string
		f         tokenFlags
		want      string
		wantErr   string
		wantWarns int
	}{
		{"env", tokenFlags{}, "from-env", "", 0},
		{"flag", tokenFlags{token: "from-flag"}, "from-flag", "", 0},
		{"file", tokenFlags{file: private}, "0123456789abcdef0123", "", 0},
		{"crlf file", tokenFlags{file: crlf}, "0123456789abcdef0123", "", 0},
		{"shared file", tokenFlags{file: shared}, "0123456789abcdef0123", "", 1},
		{"empty file", tokenFlags{file: empty}, "", "is empty", 0},
		{"two lines", tokenFlags{file: twoLines}, "", "several lines", 0},
		{"absent file", tokenFlags{file: filepath.Join(dir, "nope")}, "", "nope", 0},
		{"both", tokenFlags{token: "x", file: private}, "", "not both", 0},
	} {
		var warns []string
		got, err := tc.f.resolve(func(m string) { warns = append(warns, m) })
		if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: resolve() = %q, %v; want %q, error with %q", tc.name, got, err, tc.want, tc.wantErr)
		}
		if len(warns) != tc.wantWarns || (tc.wantWarns > 0 && !strings.Contains(warns[0], "chmod 600")) {
			t.Errorf("%s: warnings %q, want %d saying chmod 600", tc.name, warns, tc.wantWarns)
		}
	}
}
