package engine

import (
	"fmt"
	"sort"
	"sync"
)

// DefaultDevice is the device that training, serving and the CLI open.
const DefaultDevice = "cpu"

// DeviceOptions configure a device being opened.
type DeviceOptions struct {
	// Threads bounds the device's host threads; 0 means all cores.
	Threads int
}

// DeviceFactory opens a device.
type DeviceFactory func(DeviceOptions) (Device, error)

// The registry works like database/sql's drivers: a backend package
// registers itself when imported (engine/cpu from its init), and the main
// package (or a test) imports the backends it wants with _. Packages that
// only need "a device" then depend on engine alone, not on cgo backends.
var (
	devicesMu sync.Mutex
	devices   = map[string]DeviceFactory{}
)

// RegisterDevice makes a device available under name. It panics on a
// duplicate name or a nil factory: both are programming errors.
func RegisterDevice(name string, f DeviceFactory) {
	devicesMu.Lock()
	defer devicesMu.Unlock()
	if f == nil {
		panic("engine: RegisterDevice " + name + ": nil factory")
	}
	if _, dup := devices[name]; dup {
		panic("engine: RegisterDevice " + name + " twice")
	}
	devices[name] = f
}

// Devices lists the registered device names, sorted.
func Devices() []string {
	devicesMu.Lock()
	defer devicesMu.Unlock()
	names := make([]string, 0, len(devices))
	for n := range devices {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// OpenDevice constructs the device registered under name.
func OpenDevice(name string, opts DeviceOptions) (Device, error) {
	devicesMu.Lock()
	f, ok := devices[name]
	devicesMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("engine: no device %q registered (have %v); the main package must import its backend, e.g. _ \"hone/engine/cpu\"", name, Devices())
	}
	if opts.Threads < 0 {
		return nil, fmt.Errorf("engine: open device %q: threads %d must not be negative", name, opts.Threads)
	}
	d, err := f(opts)
	if err != nil {
		return nil, fmt.Errorf("engine: open device %q: %w", name, err)
	}
	return d, nil
}
