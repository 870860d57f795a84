package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"hone/internal/testassets"
)

const (
	llama3Dir = "tokenizer-llama3_1/package/models"
	llama2Dir = "tokenizer-llama2/package/models"
)

var (
	loadOnce sync.Map // dir → *Tokenizer, loading the 9 MB file once per run
)

func loadAsset(t testing.TB, dir string) *Tokenizer {
	t.Helper()
	if tok, ok := loadOnce.Load(dir); ok {
		return tok.(*Tokenizer)
	}
	tok, err := LoadDir(testassets.Path(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	loadOnce.Store(dir, tok)
	return tok
}

// fixture is a file written by tools/reference/tokenizer/make_fixtures.mjs.
type fixture struct {
	Reference string `json:"reference"`
	Cases     []struct {
		Text        string `json:"text"`
		IDs         []int  `json:"ids"`
		IDsSpecial  []int  `json:"ids_special"`
		Decoded     string `json:"decoded"`
		DecodedSkip string `json:"decoded_skip"`
	} `json:"cases"`
}

func readFixture(t *testing.T, name string) fixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) < 60 && !strings.Contains(name, "generated") {
		t.Fatalf("%s: only %d cases", name, len(f.Cases))
	}
	return f
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

func checkFixture(t *testing.T, tok *Tokenizer, name string, roundTrip func(string) bool) {
	f := readFixture(t, name)
	for _, c := range f.Cases {
		if got := tok.Encode(c.Text, false); !sameIDs(got, c.IDs) {
			t.Errorf("Encode(%q, false)\n got %v\nwant %v (%s)", short(c.Text), got, c.IDs, f.Reference)
		}
		if got := tok.Encode(c.Text, true); !sameIDs(got, c.IDsSpecial) {
			t.Errorf("Encode(%q, true)\n got %v\nwant %v", short(c.Text), got, c.IDsSpecial)
		}
		if got := tok.Decode(c.IDsSpecial, false); got != c.Decoded {
			t.Errorf("Decode(%v, false) = %q, want %q", c.IDsSpecial, got, c.Decoded)
		}
		if got := tok.Decode(c.IDsSpecial, true); got != c.DecodedSkip {
			t.Errorf("Decode(%v, true) = %q, want %q", c.IDsSpecial, got, c.DecodedSkip)
		}
		if roundTrip(c.Text) {
			if got := tok.Decode(tok.Encode(c.Text, false), false); got != c.Text {
				t.Errorf("Decode(Encode(%q)) = %q", short(c.Text), got)
			}
		}
	}
}

func sameIDs(a, b []int) bool { return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b)) }

func TestLlama3MatchesReference(t *testing.T) {
	tok := loadAsset(t, llama3Dir)
	checkFixture(t, tok, "expected_llama3.json", func(string) bool { return true })
}

// TestLlama3MatchesReferenceGenerated covers seeded random mixes of
// whitespace kinds, letters, digits, punctuation and added-token fragments.
func TestLlama3MatchesReferenceGenerated(t *testing.T) {
	tok := loadAsset(t, llama3Dir)
	checkFixture(t, tok, "expected_llama3_generated.json", func(string) bool { return true })
}

func TestLlama2MatchesReference(t *testing.T) {
	tok := loadAsset(t, llama2Dir)
	checkFixture(t, tok, "expected_llama2.json", func(s string) bool { return spRoundTrips(tok, s) })
}

func TestLlama2MatchesReferenceGenerated(t *testing.T) {
	tok := loadAsset(t, llama2Dir)
	checkFixture(t, tok, "expected_llama2_generated.json", func(s string) bool { return spRoundTrips(tok, s) })
}

// spRoundTrips reports whether SentencePiece decoding should give s back.
// The decoder strips the one space the normalizer prepends, so texts
// starting with a space lose it, and text after an added token gets its own
// prepended "▁", which decodes to an extra space; a literal "▁" in the
// text is indistinguishable from an encoded space.
func spRoundTrips(tok *Tokenizer, s string) bool {
	if strings.HasPrefix(s, " ") || strings.Contains(s, "\u2581") {
		return false
	}
	for _, a := range tok.AddedTokens() {
		if strings.Contains(s, a.Content) {
			return false
		}
	}
	return true
}

func TestKnownIDs(t *testing.T) {
	l3 := loadAsset(t, llama3Dir)
	got := l3.Encode("<|start_header_id|>user<|end_header_id|>", false)
	if want := []int{128006, 882, 128007}; !reflect.DeepEqual(got, want) {
		t.Errorf("llama3 header: got %v, want %v", got, want)
	}
	l2 := loadAsset(t, llama2Dir)
	if got := l2.Encode("Hello", false); !reflect.DeepEqual(got, []int{22557}) {
		t.Errorf("llama2 Hello: got %v", got)
	}
	if got := l2.Encode("Hello", true); !reflect.DeepEqual(got, []int{1, 22557}) {
		t.Errorf("llama2 Hello with BOS: got %v", got)
	}
}

func TestVocabAndTokens(t *testing.T) {
	l3 := loadAsset(t, llama3Dir)
	if n := l3.VocabSize(); n != 128256 {
		t.Errorf("llama3 VocabSize = %d, want 128256", n)
	}
	if id, ok := l3.TokenID("<|eot_id|>"); !ok || id != 128009 {
		t.Errorf("TokenID(<|eot_id|>) = %d, %v", id, ok)
	}
	if s, ok := l3.Token(9906); !ok || s != "Hello" {
		t.Errorf("Token(9906) = %q, %v", s, ok)
	}
	if _, ok := l3.Token(1 << 30); ok {
		t.Error("Token of an out-of-range id succeeded")
	}
	if !l3.IsSpecial(128000) || l3.IsSpecial(9906) {
		t.Error("IsSpecial wrong")
	}
	l2 := loadAsset(t, llama2Dir)
	if n := l2.VocabSize(); n != 32000 {
		t.Errorf("llama2 VocabSize = %d, want 32000", n)
	}
	if id, ok := l2.TokenID("<0x0A>"); !ok || id != 13 {
		t.Errorf("TokenID(<0x0A>) = %d, %v", id, ok)
	}
}

func TestSpecial(t *testing.T) {
	// The Llama 3.1 asset ships only tokenizer_config.json, whose eos_token
	// is <|eot_id|>; <|end_of_text|> and <|eom_id|> come from
	// generation_config.json in a full model directory (checked below).
	got := loadAsset(t, llama3Dir).Special()
	want := Special{BOS: 128000, EOS: 128009, EOSIDs: []int{128009}, PAD: -1,
		BOSToken: "<|begin_of_text|>", EOSToken: "<|eot_id|>", AddBOS: true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("llama3 Special = %+v, want %+v", got, want)
	}
	got = loadAsset(t, llama2Dir).Special()
	want = Special{BOS: 1, EOS: 2, EOSIDs: []int{2}, PAD: -1, BOSToken: "<s>", EOSToken: "</s>", AddBOS: true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("llama2 Special = %+v, want %+v", got, want)
	}
}

// TestSpecialFromModelConfigs builds a Llama 3.1 model directory as the Hub
// ships it: generation_config.json lists all three end ids.
func TestSpecialFromModelConfigs(t *testing.T) {
	src := testassets.Path(t, llama3Dir)
	dir := t.TempDir()
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		if err := os.Symlink(filepath.Join(src, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(dir, "config.json"), `{"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}`)
	write(t, filepath.Join(dir, "generation_config.json"), `{"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "do_sample": true}`)
	tok, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := tok.Special()
	if want := []int{128009, 128001, 128008}; !reflect.DeepEqual(s.EOSIDs, want) {
		t.Errorf("EOSIDs = %v, want %v", s.EOSIDs, want)
	}
	if s.EOS != 128009 || s.BOS != 128000 || s.PAD != -1 {
		t.Errorf("Special = %+v", s)
	}
}

func TestLoadWithoutConfig(t *testing.T) {
	tok, err := Load(testassets.Path(t, filepath.Join(llama2Dir, "tokenizer.json")))
	if err != nil {
		t.Fatal(err)
	}
	s := tok.Special()
	if s.BOS != 1 || !s.AddBOS || s.EOS != -1 || s.PAD != -1 {
		t.Errorf("Special from tokenizer.json alone = %+v", s)
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ name, body, want string }{
		{"bad.json", `{"model": {`, "invalid JSON"},
		{"unigram.json", `{"model": {"type": "Unigram", "vocab": [["a", -1.0]]}}`, `model.type: unsupported model type "Unigram"`},
		{"wordpiece.json", `{"model": {"type": "WordPiece", "vocab": {"a": 0}}}`, "model.type"},
		{"nomodel.json", `{"added_tokens": []}`, "model: missing"},
		{"pretok.json", `{"pre_tokenizer": {"type": "BertPreTokenizer"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`, `pre_tokenizer.type: unsupported pre-tokenizer "BertPreTokenizer"`},
		{"regex.json", `{"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated"}]}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`, "pre_tokenizer.pretokenizers[0].pattern.Regex: unsupported Split regex"},
		{"norm.json", `{"normalizer": {"type": "NFKC"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`, `normalizer.type: unsupported normalizer "NFKC"`},
		{"merge.json", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}`, "model.merges[0]"},
		{"decoder.json", `{"decoder": {"type": "WordPiece"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`, `decoder.type: unsupported decoder "WordPiece"`},
	}
	for _, c := range cases {
		path := filepath.Join(dir, c.name)
		write(t, path, c.body)
		_, err := Load(path)
		if err == nil {
			t.Errorf("%s: Load succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q should name the file and contain %q", c.name, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Errorf("LoadDir without tokenizer.json: %v", err)
	}
}

// TestMergesAsPairs checks the newer ["a", "b"] merges format and a toy
// vocabulary where the merge order matters.
func TestMergesAsPairs(t *testing.T) {
	body := `{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5},
		"merges": [["b", "c"], ["a", "b"], ["a", "bc"]]}}`
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	write(t, path, body)
	tok, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("abc", false); !reflect.DeepEqual(got, []int{5}) {
		t.Errorf("abc = %v, want [5]", got)
	}
	if got := tok.Encode("abab", false); !reflect.DeepEqual(got, []int{3, 3}) {
		t.Errorf("abab = %v, want [3 3]", got)
	}
	// No pre-tokenizer and no decoder: HF joins tokens with spaces.
	if got := tok.Decode([]int{3, 2}, false); got != "ab c" {
		t.Errorf("Decode = %q", got)
	}
}

// TestMergeStrategiesAgree checks the heap merge used for long words
// against the quadratic one on words of the real vocabulary.
func TestMergeStrategiesAgree(t *testing.T) {
	m := loadAsset(t, llama3Dir).model
	words := []string{" antidisestablishmentarianism", strings.Repeat("a", 200), strings.Repeat("ab", 77),
		" the quick brown fox", "ѕоmе mіxеd Cyrillic", strings.Repeat("😀", 20), "1234567890"}
	for _, w := range words {
		a := m.mergeShort(m.initialSymbols(w))
		b := m.mergeHeap(m.initialSymbols(w))
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%q: short %v, heap %v", w, a, b)
		}
	}
}

func TestScannerWhitespace(t *testing.T) {
	cases := map[string][]string{
		"a  b":           {"a", " ", " b"},
		"a \n\n b":       {"a", " \n\n", " b"},
		"  \n  ":         {"  \n", "  "},
		"x\t\ty":         {"x", "\t", "\ty"},
		"x\u3000\u3000y": {"x", "\u3000", "\u3000y"},
		"a!!\r\n\r\nb":   {"a", "!!\r\n\r\n", "b"},
		"I'M you'Re":     {"I", "'M", " you", "'Re"},
		// HF tokenizers (Rust, Oniguruma) folds case with Unicode simple
		// folding, so U+017F matches (?i:'s); tokenizers.js 0.2.0 folds only
		// ASCII and keeps "'ſtra" whole. Checked with the Rust library's
		// Node bindings (tools/reference/tokenizer/crosscheck_rust.mjs); the
		// ids agree on every fixture text either way.
		"'ſtra":    {"'ſ", "tra"},
		"12345":    {"123", "45"},
		"e\u0301t": {"e", "\u0301t"},
		"tail  ":   {"tail", "  "},
		" ?!x":     {" ?!", "x"},
		"\u0085x":  {"\u0085x"},
	}
	sp := regexSplitter{maxDigits: 3}
	for in, want := range cases {
		var got []string
		sp.split(in, true, func(w string) { got = append(got, w) })
		if !reflect.DeepEqual(got, want) {
			t.Errorf("split(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDecodePartialUTF8(t *testing.T) {
	l3 := loadAsset(t, llama3Dir)
	ids := l3.Encode("😀", false) // 4 bytes, at least 2 tokens
	if len(ids) < 2 {
		t.Fatalf("😀 = %v", ids)
	}
	// One U+FFFD for a truncated but otherwise well-formed sequence.
	if got := l3.Decode(ids[:len(ids)-1], false); got != "\uFFFD" {
		t.Errorf("truncated emoji decodes to %q", got)
	}
	if got := lossyUTF8([]byte{0xff, 'a', 0xe2, 0x82, 'b', 0xf0, 0x9f}); got != "\uFFFDa\uFFFDb\uFFFD" {
		t.Errorf("lossyUTF8 = %q", got)
	}
	l2 := loadAsset(t, llama2Dir)
	// Byte fallback: an invalid run becomes one U+FFFD per byte token.
	e2, _ := l2.TokenID("<0xE2>")
	x82, _ := l2.TokenID("<0x82>")
	if got := l2.Decode([]int{e2, x82}, false); got != "\uFFFD\uFFFD" {
		t.Errorf("llama2 partial bytes decode to %q", got)
	}
}

func TestConcurrentEncode(t *testing.T) {
	tok := loadAsset(t, llama3Dir)
	f := readFixture(t, "expected_llama3.json")
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rep := 0; rep < 3; rep++ {
				for _, c := range f.Cases {
					if got := tok.Encode(c.Text, false); !sameIDs(got, c.IDs) {
						t.Errorf("concurrent Encode(%q) mismatch", short(c.Text))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestInvalidUTF8Input(t *testing.T) {
	// Not valid text, but byte-level BPE still represents every byte.
	tok := loadAsset(t, llama3Dir)
	in := "ok \xff\xfe bytes"
	ids := tok.Encode(in, false)
	if got := tok.Decode(ids, false); utf8.ValidString(in) || got != strings.ToValidUTF8(in, "\uFFFD\uFFFD") && got != "ok \uFFFD\uFFFD bytes" {
		t.Errorf("Decode(Encode(invalid)) = %q", got)
	}
}

// TestScannerMatchesReference compares the Llama 3 Split scanner's words
// with the reference pre-tokenizer on whitespace-heavy generated texts.
func TestScannerMatchesReference(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "expected_llama3_pretok.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []struct {
			Text  string   `json:"text"`
			Words []string `json:"words"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	sp := regexSplitter{maxDigits: 3}
	for _, c := range f.Cases {
		var got []string
		sp.split(c.Text, true, func(w string) { got = append(got, byteLevelString(w)) })
		if len(got) != len(c.Words) || len(got) > 0 && !reflect.DeepEqual(got, c.Words) {
			t.Errorf("split(%q) = %q, want %q", c.Text, got, c.Words)
		}
	}
}

// TestAddedTokenFlags checks lstrip, rstrip and single_word on tokens added
// to the Llama 3 file. The expected ids are those of the HF tokenizers Rust
// library 0.23.2 (Node bindings) for the same file.
func TestAddedTokenFlags(t *testing.T) {
	data, err := os.ReadFile(testassets.Path(t, llama3Dir+"/tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	const extra = `{"id": 128256, "content": "<x>", "lstrip": true, "special": false},
		{"id": 128257, "content": "<y>", "rstrip": true, "special": false},
		{"id": 128258, "content": "qqxq", "single_word": true, "special": false},
		{"id": 128259, "content": "<x>>", "special": false},`
	body := string(data)
	i := strings.Index(body, `"added_tokens": [`)
	if i < 0 {
		t.Fatal("added_tokens not found")
	}
	i += len(`"added_tokens": [`)
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	write(t, path, body[:i]+extra+body[i:])
	tok, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]int{
		"a  <x> b":       {64, 128256, 293},
		"a <y>  b":       {64, 220, 128257, 65},
		"a qqxq b":       {64, 220, 128258, 293},
		"aqqxq b":        {64, 28679, 87, 80, 293},
		"a qqxqb":        {64, 56639, 87, 50798},
		"qqxq":           {128258},
		"(qqxq)":         {7, 128258, 8},
		"é qqxq1":        {978, 56639, 87, 80, 16},
		"a<x>>  b":       {64, 128259, 220, 293},
		" \t<x><y> \n c": {128256, 128257, 66},
		"<y>   <x>":      {128257, 128256},
	}
	for in, want := range cases {
		if got := tok.Encode(in, false); !reflect.DeepEqual(got, want) {
			t.Errorf("Encode(%q) = %v, want %v", in, got, want)
		}
	}
}

// TokenBytes gives each token's own bytes: concatenated over the encoding of
// a text without added tokens they spell the text exactly for byte-level BPE
// and the text after the Prepend/Replace normalizers (one leading space) for
// SentencePiece, byte-fallback pieces included.
func TestTokenBytes(t *testing.T) {
	for _, tc := range []struct {
		dir, fixture, prefix string
	}{{llama3Dir, "expected_llama3.json", ""}, {llama2Dir, "expected_llama2.json", " "}} {
		tok := loadAsset(t, tc.dir)
		checked := 0
		for _, c := range readFixture(t, tc.fixture).Cases {
			if c.Text == "" || strings.Contains(c.Text, "<") {
				continue // added-token look-alikes are checked below
			}
			var sb strings.Builder
			for _, id := range c.IDs {
				b, ok := tok.TokenBytes(id)
				if !ok {
					t.Fatalf("%s: TokenBytes(%d) unknown", tc.dir, id)
				}
				sb.WriteString(b)
			}
			if want := tc.prefix + c.Text; sb.String() != want {
				t.Errorf("%s: token bytes of %q spell %q, want %q", tc.dir, short(c.Text), short(sb.String()), short(want))
			}
			checked++
		}
		if checked < 40 {
			t.Fatalf("%s: only %d texts checked", tc.dir, checked)
		}
	}
	sp := loadAsset(t, llama2Dir)
	for tok, want := range map[string]string{"▁Hello": " Hello", "<0xE2>": "\xe2", "</s>": "</s>", "▁▁": "  "} {
		id, ok := sp.TokenID(tok)
		if got, _ := sp.TokenBytes(id); !ok || got != want {
			t.Errorf("TokenBytes(%q) = %q, want %q", tok, got, want)
		}
	}
	if _, ok := sp.TokenBytes(-1); ok {
		t.Error("TokenBytes(-1) reports a token")
	}
}

// A GPT-4-style byte-level BPE tokenizer.json in DBRX's layout (the cl100k
// Split regex with behavior Removed and invert, ByteLevel post-processor
// and decoder, no BOS) encodes and decodes as @huggingface/tokenizers does.
// No DBRX tokenizer file is available offline; the vocabulary is built by
// tools/reference/tokenizer/make_gpt4style.py.
func TestGPT4StyleMatchesReference(t *testing.T) {
	tok, err := LoadDir(filepath.Join("testdata", "gpt4style"))
	if err != nil {
		t.Fatal(err)
	}
	checkFixture(t, tok, "expected_gpt4style.json", func(string) bool { return true })
	if sp := tok.Special(); sp.AddBOS || sp.EOS != 656 {
		t.Errorf("Special() = %+v, want no BOS added and EOS <|endoftext|> (656)", sp)
	}
}
