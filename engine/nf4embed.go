package engine

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"hone/quant/nf4"
	"hone/safetensors"
)

// With Options.NF4Embeddings an NF4 base holds its token embeddings and
// output head in NF4 too (bitsandbytes' QLoRA keeps them in bf16): on
// Llama-3.1-8B they are 2.1 GB of bf16 beside 3.6 GB of NF4 layers. Each
// is quantized in chunks of rows, every chunk an nf4.Tensor of its own
// (double quantization's offset is then per chunk), so that loading holds
// one chunk in fp32 and a chunk is one tile of the head's products. The
// embedding lookup dequantizes the batch's rows. The head dequantizes a
// chunk at a time into the layer scratch (bf16 in BF16 mode, fp32
// otherwise) and computes that chunk's columns of the logits; the input
// gradient adds each chunk's product. The head is frozen: it takes no
// weight gradient. A tied head is the embeddings' tensor.

// DefaultNF4HeadRows is the rows of an NF4 head dequantized at once
// (Options.NF4HeadRows): 32 MiB of bf16 at hidden size 4096.
const DefaultNF4HeadRows = 4096

// nf4Rows are the NF4 embeddings and head.
type nf4Rows struct {
	rows        int      // rows per chunk
	names       []string // the checkpoint names: the embeddings, then the head unless tied
	embed, head []*nf4.Tensor
	// out is one tile's (n, rows) logits, or its columns of the logits'
	// gradient; out16 the gradient's bf16 cast (BF16 mode): (LossChunk,
	// rows) each.
	out   []float32
	out16 []uint16
}

// nf4HeadRows is the rows of an NF4 head's chunks: NF4HeadRows (default
// DefaultNF4HeadRows), at most the vocabulary and what the layer scratch
// the chunks are dequantized into holds.
func (c *Config) nf4HeadRows(opt Options) int {
	r := opt.NF4HeadRows
	if r <= 0 {
		r = DefaultNF4HeadRows
	}
	lo, hi := c.layerRange(0)
	return max(1, min(r, c.VocabSize, (hi-lo)/c.HiddenSize))
}

// headGradChunk is the rows of the logits' bf16 gradient the first bf16
// scratch holds: a loss chunk's, or none for an NF4 head, which gathers
// it a tile at a time into its own buffer (headGrad16).
func (o Options) headGradChunk(chunk int) int {
	if o.QuantizeBase != "" && o.NF4Embeddings {
		return 0
	}
	return chunk
}

// nf4RowsNames are the checkpoint names of the embeddings and the head.
func (c *Config) nf4RowsNames() []string {
	if c.TieWordEmbeddings {
		return []string{"model.embed_tokens.weight"}
	}
	return []string{"model.embed_tokens.weight", "lm_head.weight"}
}

func newNF4Rows(c *Config, dev Device, opt Options) *nf4Rows {
	q := &nf4Rows{rows: c.nf4HeadRows(opt), names: c.nf4RowsNames()}
	chunks := (c.VocabSize + q.rows - 1) / q.rows
	q.embed = make([]*nf4.Tensor, chunks)
	q.head = q.embed
	if !c.TieWordEmbeddings {
		q.head = make([]*nf4.Tensor, chunks)
	}
	n := opt.lossChunk(c) * q.rows
	q.out = dev.Alloc(n)
	if opt.BF16 {
		q.out16 = dev.AllocBF16(n)
	}
	return q
}

func (q *nf4Rows) free(d Device) {
	d.Free(q.out)
	if q.out16 != nil {
		d.FreeBF16(q.out16)
	}
}

// nf4RowsBytes is what newNF4Rows and quantizing allocate: the NF4
// chunks and the tile buffers.
func (c *Config) nf4RowsBytes(opt Options) int64 {
	rows, C, V := c.nf4HeadRows(opt), int64(c.HiddenSize), c.VocabSize
	var b int64
	for r0 := 0; r0 < V; r0 += rows {
		b += nf4.StorageBytes(int64(min(rows, V-r0))*C, !opt.NF4SingleScale)
	}
	b *= int64(len(c.nf4RowsNames()))
	tile := int64(opt.lossChunk(c) * rows)
	b += 4 * tile
	if opt.BF16 {
		b += 2 * tile
	}
	return b
}

// tensors is the chunks of the tensor named name.
func (q *nf4Rows) tensors(name string) []*nf4.Tensor {
	if name == q.names[0] {
		return q.embed
	}
	return q.head
}

// quantize fills every chunk, fill writing values [off, off+len(dst)) of
// the tensor named name in fp32 into dst; it is called chunk after chunk
// in order (a random initialisation draws one stream per tensor). A few
// buffers of a chunk each are reused, and go back to the OS at the end.
func (q *nf4Rows) quantize(c *Config, double bool, fill func(name string, dst []float32, off int) error) error {
	C, V := c.HiddenSize, c.VocabSize
	workers := min(runtime.GOMAXPROCS(0), 4)
	free := make(chan []float32, workers)
	for range workers {
		free <- make([]float32, q.rows*C)
	}
	var wg sync.WaitGroup
	defer debug.FreeOSMemory()
	defer wg.Wait()
	for _, name := range q.names {
		ts := q.tensors(name)
		for k := range ts {
			r0, r1 := k*q.rows, min((k+1)*q.rows, V)
			buf := (<-free)[:(r1-r0)*C]
			if err := fill(name, buf, r0*C); err != nil {
				return fmt.Errorf("quantize %s rows [%d, %d) to NF4: %w", name, r0, r1, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ts[k] = nf4.Quantize(buf, double)
				free <- buf[:cap(buf)]
			}()
		}
	}
	return nil
}

// dequantizeAll is the tensor named name dequantized to fp32.
func (q *nf4Rows) dequantizeAll(name string) []float32 {
	var out []float32
	for _, t := range q.tensors(name) {
		f := make([]float32, t.N)
		t.Dequantize(f, 0)
		out = append(out, f...)
	}
	return out
}

func (q *nf4Rows) bytes() int64 {
	var n int64
	for _, name := range q.names {
		for _, t := range q.tensors(name) {
			if t != nil {
				n += t.Bytes()
			}
		}
	}
	return n
}

// nf4Embed writes the embeddings of ids into out(N,C): dequantized to
// fp32, or in BF16 mode rounded to bf16 as a frozen bf16 base of the
// dequantized weights holds them.
func (m *Model) nf4Embed(out []float32, ids []int32) {
	q, C, V := m.nf4.emb, m.Config.HiddenSize, m.Config.VocabSize
	_ = FillDevice(m.Dev, out, func(host []float32) error {
		var tmp []float32
		for i, id := range ids {
			if id < 0 || int(id) >= V {
				panic(fmt.Sprintf("engine: token id %d outside the vocabulary of %d", id, V))
			}
			// A row may start inside a block (hidden sizes not a multiple
			// of 64): dequantize from the block's start.
			off := int(id) % q.rows * C
			a := off / nf4.BlockSize * nf4.BlockSize
			if cap(tmp) < off-a+C {
				tmp = make([]float32, off-a+C)
			}
			tmp = tmp[:off-a+C]
			q.embed[int(id)/q.rows].Dequantize(tmp, a)
			row := host[i*C : (i+1)*C]
			copy(row, tmp[off-a:])
			if m.bf16 {
				for j, v := range row {
					row[j] = safetensors.BF16ToFloat32(safetensors.Float32ToBF16(v))
				}
			}
		}
		return nil
	})
}

// nf4HeadTile dequantizes the head's chunk k into the layer scratch: fp32
// in fp32 mode, bf16 in BF16 mode (the other nil). The scratch then holds
// no layer.
func (m *Model) nf4HeadTile(k int) ([]float32, []uint16) {
	if td, ok := m.Dev.(*TimedDevice); ok {
		defer td.since("DequantizeNF4", time.Now())
	}
	t := m.nf4.emb.head[k]
	m.layer16Of = -1
	if m.bf16 {
		dst := m.layer16b[:t.N]
		_ = FillDeviceBF16(m.Dev, dst, func(buf []uint16) error { m.dequantizeBF16(t, buf); return nil })
		return nil, dst
	}
	dst := m.nf4.buf32[:t.N]
	_ = FillDevice(m.Dev, dst, func(buf []float32) error {
		parallelChunks(len(buf), func(lo, hi int) { t.Dequantize(buf[lo:hi], lo) })
		return nil
	})
	return dst, nil
}

// nf4Head says whether the output head is held in NF4.
func (m *Model) nf4Head() bool { return m.nf4 != nil && m.nf4.emb != nil }

// headLogits writes logits(n,V) = x·Wᵀ for the output head W; x16 is
// x's bf16 cast in BF16 mode.
func (m *Model) headLogits(logits, x []float32, x16 []uint16, n int) {
	C, V := m.Config.HiddenSize, m.Config.VocabSize
	if !m.nf4Head() {
		m.matmul(logits, x, x16, m.Params.LMHead, m.lmHead16(), n, V, C, xWt)
		return
	}
	q := m.nf4.emb
	for k := range q.head {
		w, w16 := m.nf4HeadTile(k)
		r := q.head[k].N / C
		out := q.out[:n*r]
		m.matmul(out, x, x16, w, w16, n, r, C, xWt)
		m.copyCols(logits, V, k*q.rows, out, r, 0, n, r)
	}
}

// headInputGrad writes dx(n,C) = dl·W for the output head W, dl(n,V)
// the logits' gradient: read in bf16 from dl16 in BF16 mode, except with
// an NF4 head, which gathers a tile of columns at a time from dl in fp32
// (headGrad16 says which the head's cross-entropy must write).
func (m *Model) headInputGrad(dx, dl []float32, dl16 []uint16, n int) {
	C, V := m.Config.HiddenSize, m.Config.VocabSize
	if !m.nf4Head() {
		m.matmul(dx, dl, dl16, m.Params.LMHead, m.lmHead16(), n, C, V, dyW)
		return
	}
	q := m.nf4.emb
	for k := range q.head {
		w, w16 := m.nf4HeadTile(k)
		r := q.head[k].N / C
		g := q.out[:n*r]
		m.copyCols(g, r, 0, dl, V, k*q.rows, n, r)
		m.matmul(dx, g, m.cast(q.out16, g), w, w16, n, C, r, MatMulFlags{Acc: k > 0})
	}
}

// headGrad16 says whether the head's input gradient reads the logits'
// gradient in bf16 alone (BF16 mode without an NF4 head).
func (m *Model) headGrad16() bool { return m.bf16 && !m.nf4Head() }

// copyCols copies the n rows of r columns at column s0 of src (row
// stride ss) into dst's columns at d0 (row stride ds).
func (m *Model) copyCols(dst []float32, ds, d0 int, src []float32, ss, s0, n, r int) {
	d := m.Dev
	if hostAddressable(d) {
		d.Sync()
		for i := range n {
			copy(dst[i*ds+d0:i*ds+d0+r], src[i*ss+s0:i*ss+s0+r])
		}
		return
	}
	for i := range n {
		d.Copy(dst[i*ds+d0:i*ds+d0+r], src[i*ss+s0:i*ss+s0+r])
	}
}
