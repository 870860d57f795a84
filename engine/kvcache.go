package engine

// KVCacheBytes is the device memory a Decoder's KV cache takes once it
// holds tokens positions: fp32 keys and values of every layer (decoding
// keeps them fp32 whatever the weights' precision). A server budgets its
// concurrent generations with it (serving.Config.KVMemory).
func (c *Config) KVCacheBytes(tokens int) int64 {
	return 2 * 4 * int64(c.NumHiddenLayers) * int64(c.KVDim()) * int64(tokens)
}
