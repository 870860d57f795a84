package refdev

import "testing"

// The reference device's buffers are handles: data moves only through
// Upload and Download, views resolve to the right offset, and a host slice
// given to a kernel is refused. This is what lets the parity tests prove
// the model respects the seam.
func TestBuffersAreHandles(t *testing.T) {
	d := New()
	x := d.Alloc(6)
	d.Upload(x, []float32{1, 2, 3, 4, 5, 6})
	if x[0] != 0 {
		t.Fatalf("Upload wrote the handle's memory: x[0] = %v", x[0])
	}
	x[1] = 100 // a direct write is not device data
	got := make([]float32, 3)
	d.Download(got, x[2:5])
	if got[0] != 3 || got[2] != 5 {
		t.Fatalf("Download of view [2:5] = %v, want [3 4 5]", got)
	}
	d.Download(got[:2], x[:2])
	if got[1] != 2 {
		t.Fatalf("a direct write to the handle reached the device: %v", got[:2])
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a host slice passed to a kernel was accepted")
			}
		}()
		d.Zero(make([]float32, 4))
	}()
	y := d.Alloc(2)
	d.Free(x)
	if d.Live() != 1 {
		t.Fatalf("Live = %d after freeing one of two buffers", d.Live())
	}
	d.Free(y)
}
