package generate_test

import (
	"context"
	"testing"

	"hone/engine"
	"hone/generate"
	"hone/internal/testmodel"
)

// Stream reads a long prompt in chunks: the decoder's working buffers do
// not grow with the prompt, so beyond the key/value cache (which does, by
// engine.Config.KVCacheBytes per token) a prompt of 1900 tokens takes no
// more device memory than one of 1100 (both grow their caches from 1024
// positions to their full length last, briefly holding both).
func TestStreamPrefillBounded(t *testing.T) {
	dir := t.TempDir()
	testmodel.Write(t, dir, testmodel.Llama3Tiny, 1)
	cpu, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var extra [2]int64
	for i, n := range []int{1100, 1900} {
		dev := engine.NewCountingDevice(cpu)
		m, err := engine.Load(dir, dev, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		base := dev.Memory().Live
		prompt := make([]int, n)
		for j := range prompt {
			prompt[j] = 1000 + j%500
		}
		if _, err := generate.Complete(context.Background(), m, prompt, generate.Params{MaxNewTokens: 3}); err != nil {
			t.Fatal(err)
		}
		kv := m.Config.KVCacheBytes(n + 3)
		rope := int64(4 * (n + 3) * m.Config.HeadDim) // the rotary tables for the decoder's length
		extra[i] = dev.Memory().Peak - base - kv - rope
		m.Close()
	}
	if extra[1] != extra[0] {
		t.Errorf("beyond the KV cache and rotary tables, decoding took %d bytes after a 1100-token prompt and %d after 1900: want equal (prompt read in chunks)", extra[0], extra[1])
	}
}
