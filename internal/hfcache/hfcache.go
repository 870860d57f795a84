// Package hfcache finds models and datasets in the local Hugging Face hub
// cache (HF_HOME/hub), as huggingface_hub lays it out.
package hfcache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Home is explicit, else $HF_HOME, else ~/.cache/huggingface.
func Home(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if h := os.Getenv("HF_HOME"); h != "" {
		return h, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no HF_HOME and no home directory: %w", err)
	}
	return filepath.Join(home, ".cache", "huggingface"), nil
}

// Kind is what a cache entry holds.
type Kind string

const (
	Models   Kind = "models"
	Datasets Kind = "datasets"
)

var (
	// ErrNotCached: the entry has no refs/main (it was never downloaded).
	ErrNotCached = errors.New("not in the local Hugging Face cache")
	// ErrMalformed: refs/main does not name a snapshot.
	ErrMalformed = errors.New("malformed refs/main")
)

// Entry is the cache folder of id (org/name): hub/<kind>--org--name.
func Entry(home string, kind Kind, id string) string {
	return filepath.Join(home, "hub", string(kind)+"--"+strings.ReplaceAll(id, "/", "--"))
}

// Snapshot is the snapshot folder refs/main of id's entry names. Its
// errors wrap ErrNotCached or ErrMalformed.
func Snapshot(home string, kind Kind, id string) (string, error) {
	entry := Entry(home, kind, id)
	b, err := os.ReadFile(filepath.Join(entry, "refs", "main"))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotCached, err)
	}
	hash := strings.TrimSpace(string(b))
	if hash == "" || strings.ContainsAny(hash, `/\`) || hash == "." || hash == ".." {
		return "", ErrMalformed
	}
	return filepath.Join(entry, "snapshots", hash), nil
}
