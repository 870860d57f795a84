package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// tokenFlags name the bearer token: --token (visible in ps), --token-file,
// or HONE_TOKEN.
type tokenFlags struct{ token, file string }

// resolve returns the token, "" when none is set. warn is told of a token
// file other users can read.
func (f tokenFlags) resolve(warn func(string)) (string, error) {
	if f.token != "" && f.file != "" {
		return "", errors.New("set --token or --token-file, not both")
	}
	if f.file != "" {
		return readTokenFile(f.file, warn)
	}
	if f.token != "" {
		return f.token, nil
	}
	return os.Getenv("HONE_TOKEN"), nil
}

// readTokenFile reads a token kept in a file, so that it is not in the
// command line; the trailing newline an editor or echo adds is dropped.
func readTokenFile(path string, warn func(string)) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 && warn != nil {
		warn(fmt.Sprintf("token file %s is readable by other users (mode %v): chmod 600 %s", path, st.Mode().Perm(), path))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimRight(string(b), "\r\n")
	if tok == "" {
		return "", fmt.Errorf("--token-file %s is empty: write the token on its first line", path)
	}
	if strings.ContainsAny(tok, "\r\n\t ") {
		return "", fmt.Errorf("--token-file %s: the token has whitespace or several lines; write only the token", path)
	}
	return tok, nil
}
