package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// Case is one line of the side-by-side comparison.
type Case struct {
	ConfigPath string
	Seq, Batch int
	Steps      int
	Precision  string
	Threads    int
	// LoRARank > 0 compares LoRA training (hone bench train --lora-rank,
	// tools/bench/torch_lora.py beside the full fine-tuning script) on
	// LoRATargets (empty: all projections).
	LoRARank    int
	LoRATargets []string
}

// method names the case's training method as TrainResult does.
func (c Case) method() string {
	if c.LoRARank > 0 {
		return "lora"
	}
	return "full"
}

// loraArgs are the LoRA flags both hone and the LoRA peer take.
func (c Case) loraArgs() []string {
	if c.LoRARank <= 0 {
		return nil
	}
	args := []string{"--lora-rank", fmt.Sprint(c.LoRARank)}
	if len(c.LoRATargets) > 0 {
		args = append(args, "--lora-targets", strings.Join(c.LoRATargets, ","))
	}
	return args
}

// Row pairs hone's result with the PyTorch peer's for one Case (Torch is nil
// when the peer could not run, with TorchErr saying why).
type Row struct {
	Case     Case
	Hone     *TrainResult
	Torch    *TrainResult
	TorchErr string
}

// Compare runs every case in fresh processes (so each peak RSS is its own):
// hone through `exe bench train --json`, PyTorch through torchScript with
// python (LoRA cases through torch_lora.py beside it). A missing
// python3-torch is reported per row, not fatal.
func Compare(ctx context.Context, exe, python, torchScript string, cases []Case, log io.Writer) ([]Row, error) {
	var rows []Row
	for _, c := range cases {
		args := []string{"bench", "train", "--config", c.ConfigPath, "--seq", fmt.Sprint(c.Seq), "--batch", fmt.Sprint(c.Batch),
			"--steps", fmt.Sprint(c.Steps), "--precision", c.Precision, "--threads", fmt.Sprint(c.Threads), "--json"}
		args = append(args, c.loraArgs()...)
		fmt.Fprintf(log, "hone    %s %s %s seq %d batch %d threads %d ...\n", filepath.Base(c.ConfigPath), c.method(), c.Precision, c.Seq, c.Batch, c.Threads)
		h, err := runJSON(ctx, exe, args, []string{fmt.Sprintf("OMP_NUM_THREADS=%d", c.Threads)})
		if err != nil {
			return rows, fmt.Errorf("bench hone %s: %w", c.ConfigPath, err)
		}
		row := Row{Case: c, Hone: h}
		fmt.Fprintf(log, "pytorch %s %s %s seq %d batch %d threads %d ...\n", filepath.Base(c.ConfigPath), c.method(), c.Precision, c.Seq, c.Batch, c.Threads)
		env := []string{fmt.Sprintf("OMP_NUM_THREADS=%d", c.Threads)}
		script := torchScript
		if c.LoRARank > 0 {
			script = filepath.Join(filepath.Dir(torchScript), "torch_lora.py")
		}
		t, err := runJSON(ctx, python, append([]string{script, "--config", c.ConfigPath, "--seq", fmt.Sprint(c.Seq), "--batch", fmt.Sprint(c.Batch),
			"--steps", fmt.Sprint(c.Steps), "--precision", c.Precision, "--threads", fmt.Sprint(c.Threads)}, c.loraArgs()...), env)
		if err != nil {
			row.TorchErr = err.Error()
		} else {
			row.Torch = t
			if t.BLAS != nil && t.BLAS.Reference {
				fmt.Fprintln(log, t.BLAS)
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func runJSON(ctx context.Context, name string, args, env []string) (*TrainResult, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(lastLine(errb.String())))
	}
	var r TrainResult
	if err := json.Unmarshal([]byte(lastLine(out.String())), &r); err != nil {
		return nil, fmt.Errorf("%s: parse output: %w", name, err)
	}
	return &r, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// WriteTable prints the comparison with hone/PyTorch ratios.
func WriteTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tmethod\tprecision\tseq×batch\tthreads\thone tok/s\ttorch tok/s\tspeed ratio\thone GFLOP/s\thone peak RSS\ttorch peak RSS\tRSS ratio\t")
	for _, r := range rows {
		c := r.Case
		tt, tr, sr, rr := "-", "-", "-", "-"
		if r.Torch != nil {
			tt = fmt.Sprintf("%.1f", r.Torch.TokensPerS)
			tr = gib(r.Torch.PeakRSSBytes)
			sr = fmt.Sprintf("%.2fx", r.Hone.TokensPerS/r.Torch.TokensPerS)
			rr = fmt.Sprintf("%.2f", float64(r.Hone.PeakRSSBytes)/float64(r.Torch.PeakRSSBytes))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d×%d\t%d\t%.1f\t%s\t%s\t%.0f\t%s\t%s\t%s\t\n", filepath.Base(c.ConfigPath), c.method(), c.Precision, c.Seq, c.Batch, c.Threads,
			r.Hone.TokensPerS, tt, sr, r.Hone.GFLOPs, gib(r.Hone.PeakRSSBytes), tr, rr)
	}
	tw.Flush()
	for _, r := range rows {
		if r.Torch != nil && r.Torch.BLAS != nil { // one machine, one BLAS: say it once
			fmt.Fprintln(w, r.Torch.BLAS)
			break
		}
	}
	writeLoRASpeedups(w, rows)
	for _, r := range rows {
		if r.TorchErr != "" {
			fmt.Fprintf(w, "pytorch did not run for %s %s: %s\n", filepath.Base(r.Case.ConfigPath), r.Case.Precision, r.TorchErr)
		}
	}
}

// PeerBLAS is what a PyTorch peer script says of the BLAS behind its fp32
// matrix products (tools/bench/torch_blas.py): Debian's python3-torch runs
// them on whatever libblas.so.3 update-alternatives points at, which is
// the reference BLAS (about 5 GFLOP/s) unless an optimized one is installed.
type PeerBLAS struct {
	Library     string  `json:"library"`     // "openblas-pthread", "reference", ...
	Path        string  `json:"path"`        // the libblas.so.3 the peer loaded, resolved
	Alternative string  `json:"alternative"` // where /etc/alternatives points libblas.so.3
	GFLOPs512   float64 `json:"fp32_512_gflop_per_s"`
	Reference   bool    `json:"reference"`
}

// String is one line about the BLAS, loud when it is the reference one.
func (b *PeerBLAS) String() string {
	s := fmt.Sprintf("pytorch's fp32 products run on %s BLAS (%s): %.1f GFLOP/s on a 512² product", b.Library, b.Path, b.GFLOPs512)
	if b.Reference {
		s = "WARNING: " + s + "; its fp32 figures measure the reference BLAS, not PyTorch (tools/bench/install-peers.sh installs OpenBLAS)"
	}
	return s
}

func gib(b int64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }

// writeLoRASpeedups prints, for each LoRA row with a full fine-tuning row
// of the same shape, how much faster LoRA trains in hone and in PyTorch.
func writeLoRASpeedups(w io.Writer, rows []Row) {
	for _, l := range rows {
		if l.Case.LoRARank <= 0 {
			continue
		}
		for _, f := range rows {
			full := f.Case
			full.LoRARank, full.LoRATargets = l.Case.LoRARank, l.Case.LoRATargets
			if f.Case.LoRARank > 0 || full.ConfigPath != l.Case.ConfigPath || full.Precision != l.Case.Precision ||
				full.Seq != l.Case.Seq || full.Batch != l.Case.Batch || full.Threads != l.Case.Threads {
				continue
			}
			torch := "-"
			if l.Torch != nil && f.Torch != nil {
				torch = fmt.Sprintf("%.2fx", l.Torch.TokensPerS/f.Torch.TokensPerS)
			}
			fmt.Fprintf(w, "lora rank %d / full tokens/s, %s %s %d threads: hone %.2fx, pytorch %s\n", l.Case.LoRARank,
				filepath.Base(l.Case.ConfigPath), l.Case.Precision, l.Case.Threads, l.Hone.TokensPerS/f.Hone.TokensPerS, torch)
		}
	}
}
