package engine

import (
	"sync"
	"unsafe"
)

// CountingDevice wraps a Device and counts the bytes its buffers take:
// allocated now, and the peak. It checks the memory estimate against what
// the model really allocates (TestMemoryEstimateMatchesAllocations).
// Scratch a device keeps inside itself is not seen here; the device states
// it through AttentionScratch.
type CountingDevice struct {
	Device
	mu         sync.Mutex
	live       map[uintptr]int64 // base address → bytes
	now, peak  int64
	allocs     int
	freedBytes int64
}

// NewCountingDevice wraps d.
func NewCountingDevice(d Device) *CountingDevice {
	return &CountingDevice{Device: d, live: map[uintptr]int64{}}
}

// add and remove skip empty buffers: Go gives them all one address.
func (c *CountingDevice) add(p unsafe.Pointer, bytes int64) {
	if bytes == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live[uintptr(p)] = bytes
	c.now += bytes
	c.peak = max(c.peak, c.now)
	c.allocs++
}

func (c *CountingDevice) remove(p unsafe.Pointer, n int) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.live[uintptr(p)]
	if !ok {
		panic("CountingDevice: Free of a buffer not allocated through it (or a view)")
	}
	delete(c.live, uintptr(p))
	c.now -= b
	c.freedBytes += b
}

func (c *CountingDevice) Alloc(n int) []float32 {
	x := c.Device.Alloc(n)
	c.add(unsafe.Pointer(unsafe.SliceData(x)), 4*int64(n))
	return x
}

func (c *CountingDevice) AllocBF16(n int) []uint16 {
	x := c.Device.AllocBF16(n)
	c.add(unsafe.Pointer(unsafe.SliceData(x)), 2*int64(n))
	return x
}

func (c *CountingDevice) AllocInt32(n int) []int32 {
	x := c.Device.AllocInt32(n)
	c.add(unsafe.Pointer(unsafe.SliceData(x)), 4*int64(n))
	return x
}

func (c *CountingDevice) Free(x []float32) {
	c.remove(unsafe.Pointer(unsafe.SliceData(x)), cap(x))
	c.Device.Free(x)
}

func (c *CountingDevice) FreeBF16(x []uint16) {
	c.remove(unsafe.Pointer(unsafe.SliceData(x)), cap(x))
	c.Device.FreeBF16(x)
}

func (c *CountingDevice) FreeInt32(x []int32) {
	c.remove(unsafe.Pointer(unsafe.SliceData(x)), cap(x))
	c.Device.FreeInt32(x)
}

// HostMemory forwards the wrapped device's optional extra.
func (c *CountingDevice) HostMemory() bool { return hostAddressable(c.Device) }

// DeviceMemory is what a CountingDevice has seen.
type DeviceMemory struct {
	Live, Peak, Freed int64 // bytes
	Buffers           int   // live buffers
	Allocs            int   // allocations ever
}

// Memory returns the counts so far.
func (c *CountingDevice) Memory() DeviceMemory {
	c.mu.Lock()
	defer c.mu.Unlock()
	return DeviceMemory{Live: c.now, Peak: c.peak, Freed: c.freedBytes, Buffers: len(c.live), Allocs: c.allocs}
}
