package runs_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"hone/client"
	"hone/engine"
	"hone/engine/cpu"
	"hone/store/storetest"
)

// TestLoRARuns drives two LoRA runs through the service on SQLite with the
// real trainer: validation shows the LoRA defaults it would train with; one
// run registers the merged model, the other the adapter alone, naming its
// base; checkpoints hold PEFT adapters; and /api/generate completes with
// both versions. Each completion is checked by teacher forcing: the
// merged version's own forward pass, and for the adapter version the base
// with the adapter attached (not merged), pick the tokens the server
// decoded.
func TestLoRARuns(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	ctx := context.Background()
	home, data, model := fixture(t)
	c := serveInProcess(t, st, home, data)

	req := request(data, model)
	req.TrainingDuration, req.LearningRate = "4ba", 1e-2
	req.Method, req.LoRA = "lora", &client.LoRA{Rank: 4, TargetModules: []string{"q_proj", "v_proj", "down_proj"}}
	val, err := c.ValidateRun(ctx, req)
	if err != nil || !val.OK {
		t.Fatalf("ValidateRun = %+v, %v", val, err)
	}
	if l := val.Request.LoRA; val.Request.Method != "lora" || l == nil || l.Rank != 4 || l.Alpha != 32 || l.Dropout == nil || *l.Dropout != 0.05 {
		t.Fatalf("validation shows method %q, lora %+v; want lora, rank 4, alpha 32, dropout 0.05", val.Request.Method, l)
	}

	merged, err := c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	areq := req
	areq.RegisterTo, areq.RegisterAdapter = "main.demo.ad", true
	adapter, err := c.CreateRun(ctx, areq)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{merged.Name, adapter.Name} {
		done := waitStatus(t, c, name, 10*time.Minute, client.StatusCompleted, client.StatusFailed)
		if done.Status != client.StatusCompleted {
			t.Fatalf("run %s: %s; events %+v", done.Status, done.Error, done.Events)
		}
		if l := done.Config.LoRA; done.Config.Method != "lora" || l == nil || l.Rank != 4 || l.Alpha != 32 {
			t.Errorf("GET run shows method %q, lora %+v", done.Config.Method, l)
		}
		if len(done.Checkpoints) < 2 {
			t.Fatalf("checkpoints %+v", done.Checkpoints)
		}
		for _, ck := range done.Checkpoints {
			if !engine.IsAdapterDir(filepath.Join(ck.Path, "adapter")) {
				t.Errorf("checkpoint %d at %s holds no PEFT adapter", ck.Step, ck.Path)
			}
		}
	}

	bot, err := c.ShowModel(ctx, "main.demo.bot")
	if err != nil || len(bot.Versions) != 1 || bot.Versions[0].Adapter {
		t.Fatalf("merged registration: %+v, %v", bot, err)
	}
	ad, err := c.ShowModel(ctx, "main.demo.ad")
	if err != nil || len(ad.Versions) != 1 || !ad.Versions[0].Adapter || ad.Versions[0].BaseModel != model {
		t.Fatalf("adapter registration: %+v, %v; want an adapter version naming base %s", ad, err, model)
	}
	adDir := ad.Versions[0].StorageLocation
	if _, err := os.Stat(filepath.Join(adDir, engine.AdapterWeightsFile)); err != nil {
		t.Fatal(err)
	}

	dev := cpu.New(0)
	mergedModel, err := engine.Load(bot.Versions[0].StorageLocation, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base, err := engine.Load(model, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := engine.LoadAdapter(adDir, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := base.Attach(a); err != nil {
		t.Fatal(err)
	}
	zero := 0.0
	for name, m := range map[string]*engine.Model{"main.demo.bot/1": mergedModel, "main.demo.ad/1": base} {
		res, err := c.Generate(ctx, client.GenerateRequest{Model: name, MaxTokens: 6, Temperature: &zero,
			Messages: []client.ChatMessage{{Role: "user", Content: "What is 12 + 30?"}}})
		if err != nil {
			t.Fatalf("generate with %s: %v", name, err)
		}
		if res.Model != name || len(res.TokenIDs) == 0 {
			t.Fatalf("generate with %s: %+v", name, res)
		}
		if got := greedy(t, m, res.PromptTokenIDs, res.TokenIDs); !slices.Equal(got, res.TokenIDs) {
			t.Errorf("%s decoded %v; its forward pass picks %v", name, res.TokenIDs, got)
		}
	}
}

// greedy is the arg-max token m's forward pass picks after each prefix of
// prompt+out, for the len(out) positions that produced out.
func greedy(t *testing.T, m *engine.Model, prompt, out []int) []int {
	ids := append(slices.Clone(prompt), out[:len(out)-1]...)
	labels, segs := make([]int, len(ids)), make([]int, len(ids))
	for i := range ids {
		labels[i], segs[i] = -100, 1
	}
	bt, err := engine.NewBatch([][]int{ids}, [][]int{labels}, [][]int{segs}, m.Config.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	logits, V := m.Logits(bt), m.Config.VocabSize
	var got []int
	for p := len(prompt) - 1; p < len(ids); p++ {
		row := logits[p*V : (p+1)*V]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		got = append(got, best)
	}
	return got
}
