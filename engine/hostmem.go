package engine

// HostMemory is an optional extra of a Device, discovered by type assertion
// (the database/sql/driver pattern): a device whose buffers are ordinary
// host memory says so, and host code then reads and fills them in place
// instead of staging a second copy of the weights through Upload and
// Download. Layer code never uses it; only loading, saving and
// initialising parameters do, through FillDevice and HostView.
type HostMemory interface {
	HostMemory() bool
}

func hostAddressable(d Device) bool {
	h, ok := d.(HostMemory)
	return ok && h.HostMemory()
}

// FillDevice runs fill on host memory whose contents then become dst's.
func FillDevice(d Device, dst []float32, fill func(host []float32) error) error {
	if hostAddressable(d) {
		d.Sync()
		return fill(dst)
	}
	host := make([]float32, len(dst))
	if err := fill(host); err != nil {
		return err
	}
	d.Upload(dst, host)
	return nil
}

// HostView returns src's contents in host memory for reading: src itself on
// a host-memory device, else a downloaded copy.
func HostView(d Device, src []float32) []float32 {
	if hostAddressable(d) {
		d.Sync()
		return src
	}
	host := make([]float32, len(src))
	d.Download(host, src)
	return host
}
