package main

import (
	"testing"

	"hone/bench"
)

// The LoRA case runs beside the full bf16 case of the same shape, so the
// table can divide one by the other; --lora-only keeps just that pair.
func TestBenchCasesLoRA(t *testing.T) {
	all := benchCases("bench/configs", 3, 2, 16, false)
	only := benchCases("bench/configs", 3, 2, 16, true)
	if len(only) != 2 || only[0].LoRARank != 0 || only[1].LoRARank != 16 || only[0].Precision != "bf16" {
		t.Fatalf("--lora-only cases %+v", only)
	}
	full := only[0]
	same := func(a, b bench.Case) bool {
		return a.ConfigPath == b.ConfigPath && a.Seq == b.Seq && a.Batch == b.Batch && a.Threads == b.Threads && a.Precision == b.Precision
	}
	var lora, fullToo int
	for _, c := range all {
		switch {
		case c.LoRARank == 16 && same(c, full):
			lora++
		case c.LoRARank == 0 && same(c, full):
			fullToo++
		}
	}
	if lora != 1 || fullToo != 1 || len(benchCases("bench/configs", 3, 2, 0, false)) != len(all)-1 {
		t.Errorf("cases %+v: want one LoRA case beside the full bf16 one, none with --lora-rank 0", all)
	}
}
