// Command makechat writes the demo chat dataset in examples/chat: the
// customer questions of a small bike shop, each asked several ways, with the
// shop's one answer to it. A model small enough to fine-tune in the demo's
// two minutes can learn these answers; a random base model cannot know them,
// so the demo's before and after show what fine-tuning did. The eval file
// asks the same questions in wordings the training file does not use. No
// system prompt: the demo asks as hone generate does, with the user's words.
// Deterministic: the files only change when this program does.
//
//	go run ./tools/makechat -out examples/chat
package main

import (
	"encoding/json"
	"flag"
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

// faq is the shop's knowledge: an answer and the ways customers ask for it.
// The last wording of each entry is kept for the eval file.
var faq = []struct {
	answer    string
	questions []string
}{
	{"We are open Tuesday to Saturday, 9am to 6pm.", []string{
		"When are you open?", "What are your opening hours?", "What time do you open?", "Are you open today?",
		"What are your hours?"}},
	{"We are closed on Sundays and Mondays.", []string{
		"Are you open on Sunday?", "Do you open on Mondays?", "Which days are you closed?",
		"Can I come by on a Sunday?"}},
	{"We are at 14 Canal Street, next to the bakery.", []string{
		"Where is the shop?", "What is your address?", "Where are you located?", "How do I find you?",
		"Where can I find the shop?"}},
	{"A basic tune-up costs 45 euros.", []string{
		"How much is a tune-up?", "What does a basic service cost?", "How much do you charge for a tune-up?",
		"What is the price of a bike service?"}},
	{"Fixing a flat tyre costs 12 euros, inner tube included.", []string{
		"How much to fix a flat tyre?", "What does a puncture repair cost?", "Can you fix a flat, and for how much?",
		"How much is a flat tire repair?"}},
	{"Most repairs are ready within two working days.", []string{
		"How long does a repair take?", "When will my bike be ready?", "How fast are repairs?",
		"How many days does a repair take?"}},
	{"No appointment is needed; just bring the bike in.", []string{
		"Do I need an appointment?", "Should I book before bringing my bike?", "Can I just walk in?",
		"Do you take walk-ins?"}},
	{"City bikes rent for 15 euros a day.", []string{
		"Do you rent bikes?", "How much is bike rental?", "Can I rent a bike for a day?",
		"What does it cost to rent a bike?"}},
	{"You can return unused items within 30 days with the receipt.", []string{
		"What is your return policy?", "Can I return something?", "How long do I have to return an item?",
		"Can I bring back a product I bought?"}},
	{"We take cards, cash and mobile payments.", []string{
		"Which payments do you accept?", "Can I pay by card?", "Do you take cash?", "How can I pay?"}},
	{"Shipping is free on orders over 50 euros.", []string{
		"Is shipping free?", "How much is delivery?", "Do you charge for shipping?",
		"What does shipping cost?"}},
	{"New bikes come with a two-year warranty.", []string{
		"Is there a warranty on new bikes?", "How long is the warranty?", "Do your bikes have a guarantee?",
		"What warranty do I get with a new bike?"}},
	{"Yes, we sell and service electric bikes.", []string{
		"Do you sell e-bikes?", "Can you repair an electric bike?", "Do you have electric bikes?",
		"Do you work on e-bikes?"}},
	{"Call us on 020 555 0142.", []string{
		"What is your phone number?", "How can I call you?", "Can I phone the shop?",
		"What number do I call?"}},
	{"Yes, gift cards are sold in the shop from 10 euros.", []string{
		"Do you sell gift cards?", "Can I buy a voucher?", "Do you have gift vouchers?",
		"Can I get a gift card?"}},
}

func example(q, a string) map[string]any {
	return map[string]any{"messages": []msg{{"user", q}, {"assistant", a}}}
}

func write(path string, rows []map[string]any) error {
	var sb strings.Builder
	for _, row := range rows {
		b, err := json.Marshal(row)
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
	var train, eval []map[string]any
	for _, f := range faq {
		n := len(f.questions) - 1
		for _, q := range f.questions[:n] {
			train = append(train, example(q, f.answer))
		}
		eval = append(eval, example(f.questions[n], f.answer))
	}
	r := rand.New(rand.NewPCG(2026, 11))
	r.Shuffle(len(train), func(i, j int) { train[i], train[j] = train[j], train[i] })
	if err := write(filepath.Join(*out, "train.jsonl"), train); err != nil {
		log.Fatal(err)
	}
	if err := write(filepath.Join(*out, "eval.jsonl"), eval); err != nil {
		log.Fatal(err)
	}
}
