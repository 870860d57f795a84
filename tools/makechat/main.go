// Command makechat writes the demo chat dataset in examples/chat: short
// conversations with a small assistant that does arithmetic, unit
// conversions and word games, each answer computed here so every example is
// correct. Deterministic: the files only change when this program does.
//
//	go run ./tools/makechat -out examples/chat
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

type msg struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

const system = "You are Hone, a concise assistant. Answer in one short sentence."

var words = []string{"apple", "river", "candle", "garden", "planet", "window", "silver", "pocket", "forest", "button",
	"marble", "thunder", "pencil", "harbor", "lantern", "meadow", "rocket", "violin", "castle", "bridge"}
var days = []string{"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}

func reverse(s string) string {
	r := []rune(s)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r)
}

// exchange returns one user question and its correct answer.
func exchange(r *rand.Rand) (string, string) {
	switch r.IntN(7) {
	case 0:
		a, b := r.IntN(90)+10, r.IntN(90)+10
		return fmt.Sprintf("What is %d + %d?", a, b), fmt.Sprintf("%d + %d = %d.", a, b, a+b)
	case 1:
		a, b := r.IntN(90)+10, r.IntN(9)+2
		return fmt.Sprintf("What is %d times %d?", a, b), fmt.Sprintf("%d × %d = %d.", a, b, a*b)
	case 2:
		km := r.IntN(50) + 1
		return fmt.Sprintf("How many meters are in %d kilometers?", km), fmt.Sprintf("%d kilometers are %d meters.", km, km*1000)
	case 3:
		w := words[r.IntN(len(words))]
		return fmt.Sprintf("Spell \"%s\" backwards.", w), fmt.Sprintf("\"%s\" backwards is \"%s\".", w, reverse(w))
	case 4:
		w := words[r.IntN(len(words))]
		return fmt.Sprintf("How many letters are in the word \"%s\"?", w), fmt.Sprintf("\"%s\" has %d letters.", w, len(w))
	case 5:
		d, n := r.IntN(7), r.IntN(20)+1
		return fmt.Sprintf("If today is %s, what day is it in %d days?", days[d], n), fmt.Sprintf("In %d days it will be %s.", n, days[(d+n)%7])
	default:
		w := words[r.IntN(len(words))]
		return fmt.Sprintf("Write \"%s\" in capital letters.", w), fmt.Sprintf("In capitals it is \"%s\".", strings.ToUpper(w))
	}
}

func write(path string, n int, r *rand.Rand) error {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		msgs := []msg{{"system", system}}
		turns := 1 + r.IntN(3)
		for t := 0; t < turns; t++ {
			q, a := exchange(r)
			msgs = append(msgs, msg{"user", q}, msg{"assistant", a})
		}
		b, err := json.Marshal(map[string]any{"messages": msgs})
		if err != nil {
			return err
		}
		sb.Write(b)
		sb.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(sb.String()), 0o644)
}

func main() {
	out := flag.String("out", "examples/chat", "output directory")
	flag.Parse()
	r := rand.New(rand.NewPCG(2026, 11))
	if err := write(filepath.Join(*out, "train.jsonl"), 400, r); err != nil {
		log.Fatal(err)
	}
	if err := write(filepath.Join(*out, "eval.jsonl"), 40, r); err != nil {
		log.Fatal(err)
	}
}
