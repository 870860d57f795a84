package catalog

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Copies are staged under <Root>/.staging/<id>/, each next to an <id>.lock
// file its process holds an exclusive flock on until the copy is in place or
// removed. Any process may start at any time and clean the stale ones: a
// lock it can take belongs to a process that has exited (the kernel drops
// flocks with their process, whatever its PID namespace), so the catalogs
// of several processes sharing one root never remove each other's copies.

const stagingDir = ".staging"

type staging struct {
	dir  string
	lock *os.File
}

// stage copies src to a new locked staging directory.
func (c *Catalog) stage(src string) (*staging, error) {
	base := filepath.Join(c.root, stagingDir)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	dir := filepath.Join(base, hex.EncodeToString(id[:]))
	lock, err := lockNew(dir + ".lock")
	if err != nil {
		return nil, fmt.Errorf("lock staging directory: %w", err)
	}
	st := &staging{dir: dir, lock: lock}
	if err := copyTree(src, dir); err != nil {
		st.release()
		return nil, fmt.Errorf("copy %s: %w", src, err)
	}
	return st, nil
}

// release removes what is left of the staging directory (nothing once it
// was renamed into place), then its lock.
func (st *staging) release() {
	os.RemoveAll(st.dir)
	os.Remove(st.lock.Name())
	st.lock.Close()
}

// lockNew creates path and takes an exclusive flock on it. A cleaner may
// remove a lock file between its creation and the flock, so the lock only
// counts if path is still the file that was locked.
func lockNew(path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
		held, err1 := f.Stat()
		named, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, named) {
			return f, nil
		}
		f.Close()
		if err1 != nil {
			return nil, err1
		}
	}
}

// cleanStaging removes the staging directories of processes that exited
// mid-registration, leaving those whose lock is held.
func (c *Catalog) cleanStaging() {
	base := filepath.Join(c.root, stagingDir)
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if id, ok := strings.CutSuffix(name, ".lock"); ok {
			c.cleanLocked(filepath.Join(base, id))
			continue
		}
		// A directory is created after its lock file and removed before
		// it, so one without a lock file is stale.
		if _, err := os.Lstat(filepath.Join(base, name+".lock")); errors.Is(err, os.ErrNotExist) {
			c.removeStale(filepath.Join(base, name))
		}
	}
}

func (c *Catalog) cleanLocked(dir string) {
	f, err := os.OpenFile(dir+".lock", os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return // in use by a live registration
	}
	c.removeStale(dir)
	os.Remove(dir + ".lock")
}

func (c *Catalog) removeStale(dir string) {
	if _, err := os.Lstat(dir); err != nil {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		c.log.Warn("remove a stale staging directory", "dir", dir, "err", err)
		return
	}
	c.log.Info("removed the staging directory of an interrupted registration", "dir", dir)
}

// canRename reports whether a directory can be renamed from src's parent
// into dstDir (the same file system), by renaming an empty probe file.
func canRename(src, dstDir string) bool {
	f, err := os.CreateTemp(filepath.Dir(filepath.Clean(src)), ".hone-rename-probe-*")
	if err != nil {
		return false
	}
	f.Close()
	probe := filepath.Join(dstDir, filepath.Base(f.Name()))
	if err := os.Rename(f.Name(), probe); err != nil {
		os.Remove(f.Name())
		return false
	}
	os.Remove(probe)
	return true
}
