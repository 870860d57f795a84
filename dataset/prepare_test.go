package dataset

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/chattemplate"
	"hone/engine"
)

var words = strings.Fields("the model learns from data and a user asks about weather code music history " +
	"why how what when is are was were can could should would please thanks help explain list show " +
	"Paris Tokyo 42 3.14 function return value error file line token batch step loss")

// genChat writes n conversations of varied length; it returns the path and
// the conversations.
func genChat(t *testing.T, dir string, n int, seed uint64) (string, [][]chattemplate.Message) {
	r := rand.New(rand.NewPCG(seed, 9))
	text := func(k int) string {
		var sb strings.Builder
		for i := range k {
			if i > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(words[r.IntN(len(words))])
		}
		return sb.String()
	}
	var lines []string
	var convs [][]chattemplate.Message
	for range n {
		var msgs []chattemplate.Message
		if r.IntN(2) == 0 {
			msgs = append(msgs, chattemplate.Message{Role: "system", Content: text(5 + r.IntN(20))})
		}
		for range 1 + r.IntN(3) {
			msgs = append(msgs, chattemplate.Message{Role: "user", Content: text(5 + r.IntN(60))},
				chattemplate.Message{Role: "assistant", Content: text(10 + r.IntN(250))})
		}
		var sb strings.Builder
		sb.WriteString(`{"messages":[`)
		for i, m := range msgs {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"role":%q,"content":%q}`, m.Role, m.Content)
		}
		sb.WriteString("]}")
		lines = append(lines, sb.String())
		convs = append(convs, msgs)
	}
	return writeFile(t, dir, "chat.jsonl", strings.Join(lines, "\n")+"\n"), convs
}

// rowSegments splits a row into its segments' (ids, labels), checking the
// padding.
func rowSegments(t *testing.T, r Row, pad int) (ids, labels [][]int, nonPad int) {
	t.Helper()
	for i := 0; i < len(r.InputIDs); {
		j := i
		for j < len(r.InputIDs) && r.SegmentIDs[j] == r.SegmentIDs[i] {
			j++
		}
		if r.SegmentIDs[i] == 0 {
			if j != len(r.InputIDs) {
				t.Fatal("padding before the end of the row")
			}
			for k := i; k < j; k++ {
				if r.InputIDs[k] != pad || r.Labels[k] != IgnoreIndex {
					t.Fatalf("pad position %d: id %d label %d", k, r.InputIDs[k], r.Labels[k])
				}
			}
			break
		}
		ids = append(ids, r.InputIDs[i:j])
		labels = append(labels, r.Labels[i:j])
		nonPad += j - i
		i = j
	}
	return ids, labels, nonPad
}

// checkAccounting verifies the split's Stats against its rows, and that the
// engine accepts the rows and scores exactly TrainedTokens positions.
func checkAccounting(t *testing.T, s *Split, ctxLen, pad int) {
	t.Helper()
	var tokens, scored int64
	for i := range s.NumRows() {
		r, err := s.Row(i)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.InputIDs) != ctxLen || len(r.Labels) != ctxLen || len(r.SegmentIDs) != ctxLen {
			t.Fatal("row length differs from the context length")
		}
		_, _, n := rowSegments(t, r, pad)
		tokens += int64(n)
		b, err := engine.NewBatch([][]int{r.InputIDs}, [][]int{r.Labels}, [][]int{r.SegmentIDs}, 128256)
		if err != nil {
			t.Fatal(err)
		}
		scored += int64(b.Scored())
	}
	st := s.Stats()
	if st.Tokens != tokens || st.TrainedTokens != scored || st.Rows != int64(s.NumRows()) {
		t.Fatalf("stats %+v, rows hold %d tokens, %d scored", st, tokens, scored)
	}
}

func TestPrepareChat(t *testing.T) {
	dir := t.TempDir()
	mdir := modelDir(t, nil)
	data, convs := genChat(t, dir, 300, 1)
	cache := filepath.Join(dir, "cache")
	spec := PrepareSpec{ModelDir: mdir, Task: Chat, Data: data, CacheDir: cache, Options: Options{ContextLength: 2048}}
	var calls int
	p, err := Prepare(context.Background(), spec, func(done, total int64) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.FromCache || calls == 0 {
		t.Fatalf("first Prepare: FromCache %t, progress calls %d", p.FromCache, calls)
	}
	st := p.Stats()
	t.Logf("chat: %d examples, %d tokens, %d trained, %d rows of %d, packing efficiency %.2f%%, lengths %+v",
		st.Examples, st.Tokens, st.TrainedTokens, st.Rows, p.ContextLength(), 100*st.Efficiency, st.Lengths)
	if st.Examples != 300 || st.Efficiency < 0.9 {
		t.Fatalf("stats %+v", st)
	}
	// Every stored example is exactly the encoded conversation, whole in one row.
	m := loadTestModel(t, nil)
	want := map[string]int{}
	for _, c := range convs {
		e, err := m.encodeChat(c, LossAssistant)
		if err != nil {
			t.Fatal(err)
		}
		ex := e.example()
		want[fmt.Sprint(ex.InputIDs, ex.Labels)]++
	}
	pad := p.meta.PadID
	for i := range p.Train().NumRows() {
		r, err := p.Row(i)
		if err != nil {
			t.Fatal(err)
		}
		ids, labels, _ := rowSegments(t, r, pad)
		for k := range ids {
			key := fmt.Sprint(ids[k], labels[k])
			if want[key] == 0 {
				t.Fatalf("row %d segment %d is not a whole example", i, k)
			}
			want[key]--
		}
	}
	for _, v := range want {
		if v != 0 {
			t.Fatal("an example is missing from the rows")
		}
	}
	checkAccounting(t, p.Train(), 2048, pad)

	// Cache hit: same inputs, nothing tokenized.
	calls = 0
	p2, err := Prepare(context.Background(), spec, func(done, total int64) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if !p2.FromCache || calls != 0 || p2.Fingerprint() != p.Fingerprint() || p2.Stats() != p.Stats() {
		t.Fatalf("second Prepare: FromCache %t, progress calls %d", p2.FromCache, calls)
	}
	r1, _ := p.Row(3)
	r2, _ := p2.Row(3)
	if !slices.Equal(r1.InputIDs, r2.InputIDs) || !slices.Equal(p.Epoch(1, 5), p2.Epoch(1, 5)) {
		t.Fatal("cached rows differ")
	}
	if ents, _ := os.ReadDir(cache); len(ents) != 1 {
		t.Fatalf("cache holds %d entries (temporary folders left?)", len(ents))
	}

	// Any changed input misses.
	b, _ := os.ReadFile(data)
	data2 := writeFile(t, dir, "chat2.jsonl", string(b)+`{"messages":[{"role":"user","content":"one more"},{"role":"assistant","content":"ok"}]}`+"\n")
	tpl := strings.Replace(m.templateSource(), "| trim", "", 1)
	miss := map[string]PrepareSpec{
		"data":           {ModelDir: mdir, Task: Chat, Data: data2, CacheDir: cache, Options: Options{ContextLength: 2048}},
		"context length": {ModelDir: mdir, Task: Chat, Data: data, CacheDir: cache, Options: Options{ContextLength: 1024}},
		"loss option":    {ModelDir: mdir, Task: Chat, Data: data, CacheDir: cache, Options: Options{ContextLength: 2048, ChatLoss: LossAll}},
		"overlong":       {ModelDir: mdir, Task: Chat, Data: data, CacheDir: cache, Options: Options{ContextLength: 2048, Overlong: OverlongTruncate}},
		"template":       {ModelDir: modelDir(t, &tpl), Task: Chat, Data: data, CacheDir: cache, Options: Options{ContextLength: 2048}},
	}
	for name, s := range miss {
		q, err := Prepare(context.Background(), s, nil)
		if err != nil {
			t.Fatal(name, err)
		}
		if q.FromCache || q.Fingerprint() == p.Fingerprint() {
			t.Fatalf("changed %s: still a cache hit", name)
		}
		q.Close()
	}
	// Tokenizer change: same template, different tokenizer.json bytes.
	mdir2 := modelDir(t, nil)
	tj, _ := os.ReadFile(filepath.Join(mdir2, "tokenizer.json"))
	writeFile(t, mdir2, "tokenizer.json", string(tj)+"\n")
	q, err := Prepare(context.Background(), PrepareSpec{ModelDir: mdir2, Task: Chat, Data: data, CacheDir: cache, Options: Options{ContextLength: 2048}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.FromCache {
		t.Fatal("changed tokenizer.json: still a cache hit")
	}
	q.Close()
}

func TestPrepareEvalSplitAndShuffle(t *testing.T) {
	dir := t.TempDir()
	data, _ := genChat(t, dir, 200, 2)
	spec := PrepareSpec{ModelDir: modelDir(t, nil), Task: Chat, Data: data, CacheDir: filepath.Join(dir, "c"),
		Options: Options{ContextLength: 1024, EvalFraction: 0.1, EvalSeed: 3}}
	p, err := Prepare(context.Background(), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tr, ev := p.Train().Stats(), p.Eval().Stats()
	if tr.Examples != 180 || ev.Examples != 20 {
		t.Fatalf("train %d eval %d examples", tr.Examples, ev.Examples)
	}
	checkAccounting(t, p.Eval(), 1024, p.meta.PadID)
	checkAccounting(t, p.Train(), 1024, p.meta.PadID)
	e0, e0b, e1 := p.Epoch(0, 11), p.Epoch(0, 11), p.Epoch(1, 11)
	if !slices.Equal(e0, e0b) || slices.Equal(e0, e1) || len(e0) != p.Train().NumRows() {
		t.Fatal("epoch order not deterministic or not varying across epochs")
	}
	n := 0
	for r, err := range p.Train().Rows(1, 11) {
		if err != nil {
			t.Fatal(err)
		}
		want, _ := p.Row(e1[n])
		if !slices.Equal(r.InputIDs, want.InputIDs) {
			t.Fatal("Rows does not follow Epoch")
		}
		n++
	}
	// A separate eval file.
	evalData, _ := genChat(t, t.TempDir(), 30, 4)
	spec.EvalData = evalData
	q, err := Prepare(context.Background(), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Train().Stats().Examples != 200 || q.Eval().Stats().Examples != 30 {
		t.Fatalf("eval file: train %+v eval %+v", q.Train().Stats(), q.Eval().Stats())
	}
}

func TestPrepareRefusesBadData(t *testing.T) {
	dir := t.TempDir()
	data := writeFile(t, dir, "d.jsonl", `{"prompt":"a","response":"b"}`+"\n"+`{"prompt":"a"}`+"\n")
	_, err := Prepare(context.Background(), PrepareSpec{ModelDir: modelDir(t, nil), Task: Instruct, Data: data, CacheDir: filepath.Join(dir, "c")}, nil)
	var pe *ProblemsError
	if !errors.As(err, &pe) || pe.Count != 1 || pe.Problems[0].Line != 2 {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "c")); len(ents) != 0 {
		t.Fatal("a failed Prepare left files in the cache")
	}
}

func TestCPTRows(t *testing.T) {
	dir := t.TempDir()
	docs := []string{"The first document is short.", "Second document,\nwith two lines.\n", "Third: " + strings.Repeat("more words here ", 12)}
	for i, d := range docs {
		writeFile(t, dir, fmt.Sprintf("%02d.txt", i), d)
	}
	m := loadTestModel(t, nil)
	var stream []int
	var docEnds []int
	for _, d := range docs {
		stream = append(stream, m.sp.BOS)
		stream = append(stream, m.tok.Encode(d, false)...)
		stream = append(stream, m.sp.EOS)
		docEnds = append(docEnds, len(stream))
	}
	const ctxLen = 16
	p, err := Prepare(context.Background(), PrepareSpec{ModelDir: modelDir(t, nil), Task: CPT, Data: dir, CacheDir: filepath.Join(t.TempDir(), "c"),
		Options: Options{ContextLength: ctxLen}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if want := (len(stream) + ctxLen - 1) / ctxLen; p.Train().NumRows() != want {
		t.Fatalf("%d rows, want %d", p.Train().NumRows(), want)
	}
	var got []int
	for i := range p.Train().NumRows() {
		r, err := p.Row(i)
		if err != nil {
			t.Fatal(err)
		}
		for k := range r.InputIDs {
			pos := i*ctxLen + k
			if pos >= len(stream) {
				if r.SegmentIDs[k] != 0 || r.Labels[k] != IgnoreIndex {
					t.Fatal("bad padding")
				}
				continue
			}
			got = append(got, r.InputIDs[k])
			if r.Labels[k] != r.InputIDs[k] {
				t.Fatal("cpt trains every token")
			}
			// A new segment starts exactly after each document's EOS and at row starts.
			newSeg := k == 0 || r.SegmentIDs[k] != r.SegmentIDs[k-1]
			if newSeg != (k == 0 || slices.Contains(docEnds, pos)) {
				t.Fatalf("row %d position %d: segment boundary mismatch", i, k)
			}
		}
	}
	if !slices.Equal(got, stream) {
		t.Fatal("rows do not spell the document stream with EOS between documents")
	}
	if st := p.Stats(); st.Examples != 3 || st.Tokens != int64(len(stream)) {
		t.Fatalf("stats %+v", st)
	}
	checkAccounting(t, p.Train(), ctxLen, p.meta.PadID)
	q, err := Prepare(context.Background(), PrepareSpec{ModelDir: modelDir(t, nil), Task: CPT, Data: dir, CacheDir: filepath.Join(t.TempDir(), "c"),
		Options: Options{ContextLength: ctxLen, EvalFraction: 0.25, EvalSeed: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Train().NumRows()+q.Eval().NumRows() != p.Train().NumRows() || q.Eval().NumRows() == 0 {
		t.Fatal("cpt eval split does not partition the rows")
	}
	checkAccounting(t, q.Eval(), ctxLen, p.meta.PadID)
	if q.Train().Stats().Tokens+q.Eval().Stats().Tokens != p.Stats().Tokens ||
		q.Train().Stats().TrainedTokens+q.Eval().Stats().TrainedTokens != p.Stats().TrainedTokens {
		t.Fatal("cpt split accounting does not add up")
	}
}

// Chunked tokenization of a large document gives the same tokens as
// tokenizing it whole when the cuts fall at newlines or spaces.
func TestCPTChunkingMatchesWhole(t *testing.T) {
	old := cptChunk
	cptChunk = 300
	defer func() { cptChunk = old }()
	r := rand.New(rand.NewPCG(5, 5))
	var sb strings.Builder
	for sb.Len() < 20000 {
		sb.WriteString(words[r.IntN(len(words))])
		switch r.IntN(12) {
		case 0:
			sb.WriteString(".\n")
		case 1:
			sb.WriteString(",  ")
		default:
			sb.WriteByte(' ')
		}
	}
	doc := sb.String()
	dir := t.TempDir()
	f := writeFile(t, dir, "big.txt", doc)
	m := loadTestModel(t, nil)
	var got []int
	chunks := 0
	s := &scanner{m: m, task: CPT, opt: Options{Workers: 2}, progress: func(int64) {}, problem: func(p Problem) { t.Fatal(p) }}
	s.tokens = func(ids []int, _ bool) error { got = append(got, ids...); chunks++; return nil }
	if err := s.scanFiles(context.Background(), source{files: []string{f}}); err != nil {
		t.Fatal(err)
	}
	want := slices.Concat([]int{m.sp.BOS}, m.tok.Encode(doc, false), []int{m.sp.EOS})
	if chunks < 50 || !slices.Equal(got, want) {
		t.Fatalf("%d chunks; chunked tokens differ from whole-document tokens (%d vs %d)", chunks, len(got), len(want))
	}
}

func TestCPTTooManyTokens(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "a.txt", strings.Repeat("many words in a row ", 50))
	m := loadTestModel(t, nil)
	var probs []Problem
	s := &scanner{m: m, task: CPT, progress: func(int64) {}, problem: func(p Problem) { probs = append(probs, p) }, maxTokens: 20}
	s.tokens = func([]int, bool) error { return nil }
	if err := s.scanFiles(context.Background(), source{files: []string{f}}); err != nil {
		t.Fatal(err)
	}
	if len(probs) != 1 || probs[0].Rule != RuleTooManyTokens {
		t.Fatalf("problems %+v", probs)
	}
}
