package engine

import "fmt"

// IgnoreIndex is the HF label value for positions not scored.
const IgnoreIndex = -100

// Batch is one micro-batch of B rows of T tokens in the engine's form: labels
// already shifted to per-position targets, and packed documents resolved into
// positions and document starts. It lives in host memory; the model uploads
// it into device buffers of its own for each pass.
type Batch struct {
	B, T     int
	IDs      []int32 // (B*T) input token ids
	Targets  []int32 // (B*T) token that position t predicts, -1 when not scored
	Pos      []int32 // (B*T) rotary position: index within its document
	DocStart []int32 // (B*T) index t of the first token of the position's document
}

// Scored counts the positions that contribute to the loss.
func (b *Batch) Scored() int {
	n := 0
	for _, t := range b.Targets {
		if t >= 0 {
			n++
		}
	}
	return n
}

// NewBatch converts HF-convention rows into a Batch. labels have the shape of
// inputIDs: the logits at position t are scored against labels[t+1], and
// IgnoreIndex is not scored. segmentIDs may be nil (one document per row); a
// document is a run of equal consecutive ids, positions restart at each, and
// a document's last token is never scored against the next one's first.
func NewBatch(inputIDs, labels, segmentIDs [][]int, vocab int) (*Batch, error) {
	B := len(inputIDs)
	if B == 0 || len(inputIDs[0]) == 0 {
		return nil, fmt.Errorf("batch: input_ids is empty")
	}
	T := len(inputIDs[0])
	if len(labels) != B {
		return nil, fmt.Errorf("batch: labels has %d rows, input_ids %d", len(labels), B)
	}
	if segmentIDs != nil && len(segmentIDs) != B {
		return nil, fmt.Errorf("batch: segment_ids has %d rows, input_ids %d", len(segmentIDs), B)
	}
	b := &Batch{B: B, T: T, IDs: make([]int32, B*T), Targets: make([]int32, B*T), Pos: make([]int32, B*T), DocStart: make([]int32, B*T)}
	for r := 0; r < B; r++ {
		if len(inputIDs[r]) != T || len(labels[r]) != T || (segmentIDs != nil && len(segmentIDs[r]) != T) {
			return nil, fmt.Errorf("batch: row %d: input_ids, labels and segment_ids must all have length %d", r, T)
		}
		seg := func(t int) int {
			if segmentIDs == nil {
				return 0
			}
			return segmentIDs[r][t]
		}
		start := 0
		for t := 0; t < T; t++ {
			id := inputIDs[r][t]
			if id < 0 || id >= vocab {
				return nil, fmt.Errorf("batch: input_ids[%d][%d] = %d is outside the vocabulary [0, %d)", r, t, id, vocab)
			}
			if t > 0 && seg(t) != seg(t-1) {
				start = t
			}
			i := r*T + t
			b.IDs[i] = int32(id)
			b.DocStart[i] = int32(start)
			b.Pos[i] = int32(t - start)
			b.Targets[i] = -1
			if t+1 < T && seg(t+1) == seg(t) {
				lab := labels[r][t+1]
				switch {
				case lab == IgnoreIndex:
				case lab < 0 || lab >= vocab:
					return nil, fmt.Errorf("batch: labels[%d][%d] = %d is outside the vocabulary [0, %d) and is not %d", r, t+1, lab, vocab, IgnoreIndex)
				default:
					b.Targets[i] = int32(lab)
				}
			}
		}
	}
	return b, nil
}
