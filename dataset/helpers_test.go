package dataset

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/internal/testassets"
)

const llama3Dir = "tokenizer-llama3_1/package/models"

// testConfig is a valid Llama 3.2 1B config.json.
const testConfig = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":128256,
"hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":16,"num_attention_heads":32,
"num_key_value_heads":8,"head_dim":64,"rms_norm_eps":1e-5,"rope_theta":500000.0,
"rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},
"max_position_embeddings":131072,"tie_word_embeddings":true,"attention_bias":false,"mlp_bias":false,
"bos_token_id":128000,"eos_token_id":128001,"hidden_act":"silu","torch_dtype":"bfloat16"}`

// modelDir makes a model directory from the real Llama 3.1 tokenizer. When
// template is not nil it replaces the chat_template ("": removed).
func modelDir(t testing.TB, template *string) string {
	t.Helper()
	src := testassets.Path(t, llama3Dir)
	dir := t.TempDir()
	tj, err := os.ReadFile(filepath.Join(src, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := os.ReadFile(filepath.Join(src, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if template != nil {
		var cfg map[string]any
		if err := json.Unmarshal(tc, &cfg); err != nil {
			t.Fatal(err)
		}
		if *template == "" {
			delete(cfg, "chat_template")
		} else {
			cfg["chat_template"] = *template
		}
		if tc, err = json.Marshal(cfg); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range map[string][]byte{"tokenizer.json": tj, "tokenizer_config.json": tc, "config.json": []byte(testConfig)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// llama31Template is the full Meta Llama 3.1 chat template, taken from the
// ollama-utils asset (a JavaScript string literal there).
func llama31Template(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(testassets.Path(t, "ollama-utils/package/src/chat-template-automap.ts"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, `model: "library/llama3.1:8b"`)
	if i < 0 {
		t.Fatal("llama3.1 template not found in the asset")
	}
	s = s[i:]
	j := strings.Index(s, "gguf: '")
	s = s[j+len("gguf: '"):]
	var sb strings.Builder
	for k := 0; k < len(s); k++ {
		c := s[k]
		if c == '\'' {
			return sb.String()
		}
		if c != '\\' {
			sb.WriteByte(c)
			continue
		}
		k++
		switch s[k] {
		case 'n':
			sb.WriteByte('\n')
		case 't':
			sb.WriteByte('\t')
		case 'r':
			sb.WriteByte('\r')
		default:
			sb.WriteByte(s[k])
		}
	}
	t.Fatal("unterminated template string")
	return ""
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// labelledRuns returns the decoded text of each maximal run of trained
// positions of ex.
func labelledRuns(m *model, ex Example) []string {
	var runs []string
	var cur []int
	flush := func() {
		if len(cur) > 0 {
			runs = append(runs, m.tok.Decode(cur, false))
			cur = nil
		}
	}
	for i, l := range ex.Labels {
		if l == IgnoreIndex {
			flush()
			continue
		}
		if l != ex.InputIDs[i] {
			panic("label differs from input id")
		}
		cur = append(cur, l)
	}
	flush()
	return runs
}

func strp(s string) *string { return &s }
