package engine

import (
	"os"
	"testing"
)

// shardSizes (what the plan of a sharded rank counts) equals what the
// shards and the gather buffer are: ShardRanges' rank 0, shardSlot and
// the largest ShardChunk, walking every part.
func TestShardSizes(t *testing.T) {
	for _, f := range []string{"llama-small.json", "llama-3.2-1b.json", "mixtral-scaled.json"} {
		raw, err := os.ReadFile("../bench/configs/" + f)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseConfig(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 2, 3, 7, 64, 1000} {
			var shard, chunk int64
			for _, rg := range c.ShardRanges(n, 0) {
				shard += int64(rg[1] - rg[0])
			}
			for p := range c.NumParts() {
				chunk = max(chunk, int64(c.ShardChunk(p, n)))
			}
			gs, gslot, gchunk := c.shardSizes(int64(n))
			if gs != shard || gslot != int64(c.shardSlot(n)) || gchunk != chunk {
				t.Errorf("%s over %d: shardSizes %d, %d, %d; want %d, %d, %d", f, n, gs, gslot, gchunk, shard, c.shardSlot(n), chunk)
			}
		}
	}
}
