package export_test

import (
	"math"
	"testing"

	"hone/engine"
	"hone/internal/testmodel"
)

// llama3Scaled is Llama 3.1's shape in miniature: llama3 rope scaling and
// a separate output matrix (lm_head), with the real 128256-token vocabulary.
// Its original context (64) is small so that the scaling changes most
// rotary frequencies within a short prompt.
const llama3Scaled = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 32,
	"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
	"rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 4096, "tie_word_embeddings": false,
	"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
	"original_max_position_embeddings": 64},
	"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}`

// llama2Tiny is a Llama 2-shaped model with the SentencePiece vocabulary.
const llama2Tiny = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 32,
	"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
	"rms_norm_eps": 1e-6, "rope_theta": 10000, "max_position_embeddings": 4096, "tie_word_embeddings": false,
	"bos_token_id": 1, "eos_token_id": 2}`

// biasTiny has every bias llama.cpp's llama architecture can load
// (attention and MLP), and tied embeddings.
const biasTiny = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 32,
	"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
	"rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 4096, "tie_word_embeddings": true,
	"attention_bias": true, "mlp_bias": true, "bos_token_id": 128000, "eos_token_id": [128001, 128009]}`

var llama3Texts = []string{
	"Hello, world! How are you today?",
	"<|start_header_id|>user<|end_header_id|>\n\nWhat is 12345 + 678?<|eot_id|>",
	"  leading spaces,\ttabs\n\nand newlines   ",
	"Ünïcödé: naïve café, 東京, emoji 🦙🚀, I'm sure they'll've",
}

var spmTexts = []string{
	"Hello, world! How are you today?",
	"[INST] What is 12345 + 678? [/INST]",
	"  leading spaces,\ttabs\n\nand newlines   ",
	"Ünïcödé: naïve café, 東京, emoji 🦙🚀",
}

// writeLlama2Model writes a random Llama 2-shaped model with the real
// Llama 2 tokenizer files.
func writeLlama2Model(t testing.TB, dir string, seed uint64) {
	t.Helper()
	testmodel.WriteWith(t, dir, llama2Tiny, "tokenizer-llama2", seed)
}

// sharpenAttention scales the query and key projections of the model in
// dir so that attention depends strongly on the scores, and so on the Q/K
// layout and the rotary embedding: at the init's scale attention is nearly
// uniform and a wrong layout would go unnoticed.
func sharpenAttention(t testing.TB, dir string) {
	t.Helper()
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(dir, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	params := engine.HostView(dev, m.Params.Arena)
	err = engine.FillDevice(dev, m.Params.Arena, func(host []float32) error {
		copy(host, params)
		for _, l := range engine.NewWeights(m.Config, host).Layers {
			// Mixtral's router too, so that routing is decisive, and its
			// experts, so that their outputs decide the next token.
			for _, w := range [][]float32{l.WQ, l.WK, l.Router} {
				for i := range w {
					w[i] *= 25
				}
			}
			for _, e := range l.Experts {
				for _, w := range [][]float32{e.W1, e.W2, e.W3} {
					for i := range w {
						w[i] *= 10
					}
				}
			}
			// Biases (when the config has them) start at zero; give them
			// values so that their layout is checked too.
			for k, b := range [][]float32{l.BQ, l.BK, l.BV, l.BO, l.BGate, l.BUp, l.BDown} {
				scale := float32(0.005) // below the embeddings (0.02), so the output still varies
				if k < 2 {
					scale = 2 // query and key biases: comparable with their projections
				}
				for i := range b {
					b[i] = float32(math.Sin(float64(7*k+i))) * scale
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m.ParamsChanged()
	if err := m.Save(dir, engine.SaveOptions{SourceDir: dir}); err != nil {
		t.Fatal(err)
	}
}
