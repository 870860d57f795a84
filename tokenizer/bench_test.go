package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"

	"hone/internal/testassets"
)

// proseWords is a vocabulary for synthetic English prose (no copyrighted
// text): common words plus some longer and rarer ones so that the word cache
// does not see only a handful of entries.
var proseWords = strings.Fields(`the of and to in is was that for it with as his on be at by had are
but from or have an they which one you were all her she there would their we him been has when who
will more no if out so said what up its about into than them can only other new some could time
these two may then do first any my now such like our over man me even most made after also did many
before must through back years where much your way well down should because each just those people
how too little state good very make world still own see men work long get here between both life
being under never day same another know while last might us great old year off come since against go
came right used take three small large number house information system government development
research community education environment technology experience knowledge language understanding
mountain river forest ocean weather morning evening journey market village library kitchen garden
window bicycle engineer scientist teacher student doctor musician painter carpenter farmer
remarkable extraordinary surprisingly carefully independently approximately nevertheless
photosynthesis infrastructure responsibility characteristics interpretation recommendation
quickly slowly brightly quietly happily gently eagerly barely nearly rarely
don't can't won't it's I'm you're we've they'll she'd isn't wasn't couldn't`)

// benchProse returns about n bytes of deterministic synthetic prose with
// sentences, punctuation, numbers, quotes and paragraph breaks.
func benchProse(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	var sb strings.Builder
	for sb.Len() < n {
		words := 6 + r.IntN(18)
		for i := 0; i < words; i++ {
			w := proseWords[r.IntN(len(proseWords))]
			if i == 0 {
				w = strings.ToUpper(w[:1]) + w[1:]
			} else {
				sb.WriteByte(' ')
			}
			switch r.IntN(40) {
			case 0:
				w = "\"" + w + "\""
			case 1:
				w += ","
			case 2:
				w = "(" + w + ")"
			case 3:
				w = []string{"1", "42", "1987", "3.5", "2,048", "100%"}[r.IntN(6)]
			}
			sb.WriteString(w)
		}
		sb.WriteString([]string{".", ".", ".", "?", "!", ";"}[r.IntN(6)])
		if r.IntN(8) == 0 {
			sb.WriteString("\n\n")
		} else {
			sb.WriteByte(' ')
		}
	}
	return sb.String()
}

// BenchmarkEncodeLlama3 reports Llama 3 encoding throughput (MB/s) on
// 300 KB of synthetic English prose, with the word cache warm as it is in a
// long training-data run.
func BenchmarkEncodeLlama3(b *testing.B) {
	tok, err := LoadDir(testassets.Path(b, llama3Dir))
	if err != nil {
		b.Fatal(err)
	}
	text := benchProse(300 << 10)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tok.Encode(text, true)
	}
}

// BenchmarkLoadLlama3 measures loading the 9 MB tokenizer.json.
func BenchmarkLoadLlama3(b *testing.B) {
	path := testassets.Path(b, llama3Dir+"/tokenizer.json")
	for b.Loop() {
		if _, err := Load(path); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeLlama3NoCache is BenchmarkEncodeLlama3 without the word
// cache: the worst case, every word merged afresh.
func BenchmarkEncodeLlama3NoCache(b *testing.B) {
	tok, err := LoadDir(testassets.Path(b, llama3Dir))
	if err != nil {
		b.Fatal(err)
	}
	tok.model.noCache = true
	text := benchProse(300 << 10)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		tok.Encode(text, true)
	}
}
