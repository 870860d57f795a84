package runs

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"hone/store"
)

// A journal holds one run execution's tracking records (metrics, events,
// checkpoints and their pruning, eval-prompt outputs) on local disk until
// the store has them, so a database that does not answer loses nothing:
// records are appended (and fsynced) in the training goroutine and
// delivered in order by the execution's deliverer, retried until the store
// answers again. Delivery is idempotent (steps, evals and checkpoints are
// upserts by step; events carry a key), so a record delivered twice (a
// crash after the store committed but before the journal noted it) is
// stored once.
//
// The file is work/journal/epoch-<lease epoch>.log: one file per claim of
// the run, and a record is delivered only while its epoch is still the
// run's (checked in the delivery's transaction), so a stale worker's
// records are refused. A file of an older epoch found at a claim is
// removed: its records cannot be told from a stale worker's.
//
// Each record is framed as length (4 bytes, little endian), CRC-32 of the
// payload, then the gob payload; a torn tail left by a crash fails its CRC
// and is cut off when the file is opened.
type journal struct {
	path  string
	epoch int64

	mu      sync.Mutex
	f       *os.File
	next    int64    // sequence number of the next record
	pending []record // appended, not yet delivered, in order
	fenced  bool     // the store refused the epoch: nothing more is kept
	closed  bool
	wake    chan struct{}
	idle    chan struct{} // closed and replaced whenever pending empties
}

// record is one journal entry; exactly one of the payload fields is set.
type record struct {
	Seq  int64
	Time time.Time

	Step    *store.StepMetric
	ETA     time.Time // with Step: the estimated end, zero when none
	Running *runningRec
	Eval    *store.EvalMetric
	Ckpt    *store.Checkpoint
	Forget  *int // step of a pruned checkpoint
	Event   *store.Event
	Prompts []store.PromptOutput
}

// runningRec moves a STARTING run to RUNNING at its first step (if it is
// still STARTING or RUNNING under this job), with its event.
type runningRec struct {
	JobID   int64
	Message string
}

// key identifies a record across deliveries: its epoch and sequence.
func (j *journal) key(r record) string { return fmt.Sprintf("%d.%d", j.epoch, r.Seq) }

func journalDir(workDir string) string { return filepath.Join(workDir, "journal") }

// openJournal opens (creating) the journal of epoch in workDir and loads
// the records of a previous process of the same epoch that were not
// delivered. It returns the number of records of older epochs it dropped.
func openJournal(workDir string, epoch int64) (*journal, int, error) {
	dir := journalDir(workDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, fmt.Errorf("create journal directory: %w", err)
	}
	dropped, err := dropOlderJournals(dir, epoch)
	if err != nil {
		return nil, 0, err
	}
	j := &journal{path: filepath.Join(dir, fmt.Sprintf("epoch-%08d.log", epoch)), epoch: epoch,
		wake: make(chan struct{}, 1), idle: make(chan struct{}), next: 1}
	recs, good, err := readJournal(j.path)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.OpenFile(j.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, 0, fmt.Errorf("open journal: %w", err)
	}
	// Cut a torn tail off, then append after the good records.
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open journal %s: %w", j.path, err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open journal %s: %w", j.path, err)
	}
	j.f, j.pending = f, recs
	for _, r := range recs {
		j.next = max(j.next, r.Seq+1)
	}
	if len(recs) == 0 {
		close(j.idle)
	} else {
		j.signal()
	}
	return j, dropped, nil
}

// dropOlderJournals removes journals of epochs before epoch, returning how
// many records they held.
func dropOlderJournals(dir string, epoch int64) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read journal directory: %w", err)
	}
	dropped := 0
	for _, e := range entries {
		n, ok := strings.CutPrefix(strings.TrimSuffix(e.Name(), ".log"), "epoch-")
		ep, err := strconv.ParseInt(n, 10, 64)
		if !ok || err != nil || ep >= epoch {
			continue
		}
		p := filepath.Join(dir, e.Name())
		recs, _, _ := readJournal(p)
		dropped += len(recs)
		if err := os.Remove(p); err != nil {
			return dropped, fmt.Errorf("remove stale journal: %w", err)
		}
	}
	return dropped, nil
}

// readJournal reads the records of path and the length of its intact
// prefix.
func readJournal(path string) ([]record, int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read journal: %w", err)
	}
	var recs []record
	off := int64(0)
	for len(b) >= 8 {
		n, sum := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])
		if uint64(len(b)-8) < uint64(n) || crc32.ChecksumIEEE(b[8:8+n]) != sum {
			break // torn tail
		}
		var r record
		if err := gob.NewDecoder(bytes.NewReader(b[8 : 8+n])).Decode(&r); err != nil {
			break
		}
		recs = append(recs, r)
		b, off = b[8+n:], off+8+int64(n)
	}
	sort.SliceStable(recs, func(a, b int) bool { return recs[a].Seq < recs[b].Seq })
	return recs, off, nil
}

// errJournalClosed is returned by append after close or fencing.
var errJournalClosed = errors.New("journal closed")

// append writes r durably (write and fsync) and queues it for delivery.
func (j *journal) append(r record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || j.fenced {
		return errJournalClosed
	}
	r.Seq = j.next
	var payload bytes.Buffer
	if err := gob.NewEncoder(&payload).Encode(&r); err != nil {
		return fmt.Errorf("journal: encode: %w", err)
	}
	frame := make([]byte, 8, 8+payload.Len())
	binary.LittleEndian.PutUint32(frame, uint32(payload.Len()))
	binary.LittleEndian.PutUint32(frame[4:], crc32.ChecksumIEEE(payload.Bytes()))
	frame = append(frame, payload.Bytes()...)
	if _, err := j.f.Write(frame); err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	j.next++
	if len(j.pending) == 0 {
		j.idle = make(chan struct{})
	}
	j.pending = append(j.pending, r)
	j.signal()
	return nil
}

func (j *journal) signal() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// batch returns up to n of the oldest undelivered records.
func (j *journal) batch(n int) []record {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]record(nil), j.pending[:min(n, len(j.pending))]...)
}

// delivered notes that the oldest n records are in the store. When none is
// left the file is emptied: everything in it is delivered.
func (j *journal) delivered(n int) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pending = j.pending[n:]
	if len(j.pending) > 0 {
		return nil
	}
	close(j.idle)
	if j.closed {
		return nil
	}
	if err := j.f.Truncate(0); err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	_, err := j.f.Seek(0, io.SeekStart)
	return err
}

// fence drops what is pending: the store refused this epoch.
func (j *journal) fence() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fenced {
		return
	}
	j.fenced = true
	if len(j.pending) > 0 {
		j.pending = nil
		close(j.idle)
	}
}

// idleCh is closed once nothing is pending (or the journal was fenced).
func (j *journal) idleCh() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.idle
}

// pendingCount is the number of undelivered records.
func (j *journal) pendingCount() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.pending)
}

// close stops appends and closes the file; undelivered records stay in it.
// An empty file is removed.
func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	err := j.f.Close()
	if len(j.pending) == 0 || j.fenced {
		os.Remove(j.path)
	}
	return err
}
