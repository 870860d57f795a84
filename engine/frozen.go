package engine

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"hone/safetensors"
)

// A frozen bf16 base (Options.FrozenBF16) keeps its matrices only in w16,
// laid out by ParamSpecs, and its norms and biases in the fp32 Params
// arena, laid out by vectorSpecs. Loading and initialising fill each part
// directly, without an fp32 copy of the matrices.

func errFrozenBF16(what string) error {
	return fmt.Errorf("%s: the model holds a frozen bf16 base (Options.FrozenBF16); load it without FrozenBF16 for this", what)
}

// FillDeviceBF16 runs fill on host memory whose contents then become dst's,
// as FillDevice does for fp32 buffers.
func FillDeviceBF16(d Device, dst []uint16, fill func(host []uint16) error) error {
	if hostAddressable(d) {
		d.Sync()
		return fill(dst)
	}
	host := make([]uint16, len(dst))
	if err := fill(host); err != nil {
		return err
	}
	d.UploadBF16(dst, host)
	return nil
}

// loadWeightsBF16 is loadWeights for a frozen bf16 base: matrices are
// rounded to bf16 straight from the checkpoint's bytes (copied when they
// are bf16 already), norms and biases read as fp32.
func loadWeightsBF16(m *Model, st *safetensors.Model) error {
	vec := map[string]ParamSpec{}
	for _, s := range m.Config.vectorSpecs() {
		vec[s.Name] = s
	}
	return FillDeviceBF16(m.Dev, m.w16.Arena, func(w16 []uint16) error {
		return FillDevice(m.Dev, m.Params.Arena, func(p32 []float32) error {
			for _, s := range m.Config.ParamSpecs() {
				if v, ok := vec[s.Name]; ok {
					if err := st.Float32(s.Name, p32[v.Offset:v.Offset+v.Size()]); err != nil {
						return err
					}
					continue
				}
				if err := readBF16(st, s.Name, w16[s.Offset:s.Offset+s.Size()]); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// readBF16 converts tensor name (F32, BF16 or F16) into dst, rounding to
// nearest even, in parallel chunks.
func readBF16(st *safetensors.Model, name string, dst []uint16) error {
	info, _ := st.Info(name)
	raw, err := st.Bytes(name)
	if err != nil {
		return err
	}
	var conv func(b []byte) uint16
	switch info.DType {
	case safetensors.BF16:
		conv = func(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
	case safetensors.F16:
		conv = func(b []byte) uint16 {
			return safetensors.Float32ToBF16(safetensors.F16ToFloat32(binary.LittleEndian.Uint16(b)))
		}
	case safetensors.F32:
		conv = func(b []byte) uint16 {
			return safetensors.Float32ToBF16(math.Float32frombits(binary.LittleEndian.Uint32(b)))
		}
	default:
		return fmt.Errorf("tensor %q has dtype %s; hone reads F32, BF16 and F16", name, info.DType)
	}
	size := info.DType.Size()
	if len(raw) != len(dst)*size {
		return fmt.Errorf("tensor %q: %d bytes for %d values of %s", name, len(raw), len(dst), info.DType)
	}
	parallelChunks(len(dst), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] = conv(raw[i*size:])
		}
	})
	return nil
}

// parallelChunks runs fn over [0, n) in chunks on every core.
func parallelChunks(n int, fn func(lo, hi int)) {
	const chunk = 1 << 16
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for lo := 0; lo < n; lo += chunk {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(lo, min(lo+chunk, n))
		}()
	}
	wg.Wait()
}

// initRandomBF16 is InitRandom for a frozen bf16 base: each matrix gets the
// values InitRandom draws for it (the same stream per tensor), rounded to
// bf16, so it equals the fp32 model's bf16 copy; norms 1, biases 0.
func (m *Model) initRandomBF16(seed uint64) {
	specs := m.Config.ParamSpecs()
	_ = FillDevice(m.Dev, m.Params.Arena, func(p32 []float32) error {
		initRandom(m.Config.vectorSpecs(), p32, seed) // no random draws: norms and biases
		return nil
	})
	_ = FillDeviceBF16(m.Dev, m.w16.Arena, func(w16 []uint16) error {
		var wg sync.WaitGroup
		sem := make(chan struct{}, runtime.GOMAXPROCS(0))
		for i, s := range specs {
			if len(s.Shape) == 1 {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				r := rand.New(rand.NewPCG(seed, uint64(i)))
				for j := range w16[s.Offset : s.Offset+s.Size()] {
					w16[s.Offset+j] = safetensors.Float32ToBF16(float32(0.02 * r.NormFloat64()))
				}
			}()
		}
		wg.Wait()
		return nil
	})
}
