package engine

import (
	"strings"
	"testing"
)

// The registry refuses what would otherwise fail later and obscurely: an
// unknown name (the backend was not imported), a duplicate name, negative
// threads.
func TestDeviceRegistry(t *testing.T) {
	_, err := OpenDevice("no-such-device", DeviceOptions{})
	if err == nil || !strings.Contains(err.Error(), `"no-such-device"`) || !strings.Contains(err.Error(), "import") {
		t.Errorf("OpenDevice of an unregistered name: %v, want an error naming it and the import to add", err)
	}
	opened := 0
	defer func() { devicesMu.Lock(); delete(devices, "registry-test"); devicesMu.Unlock() }()
	RegisterDevice("registry-test", func(o DeviceOptions) (Device, error) { opened++; return nil, nil })
	if _, err := OpenDevice("registry-test", DeviceOptions{Threads: -1}); err == nil || opened != 0 {
		t.Errorf("OpenDevice with threads -1: %v (factory called %d times)", err, opened)
	}
	if _, err := OpenDevice("registry-test", DeviceOptions{Threads: 2}); err != nil || opened != 1 {
		t.Errorf("OpenDevice: %v (factory called %d times)", err, opened)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering a name twice did not panic")
		}
	}()
	RegisterDevice("registry-test", func(DeviceOptions) (Device, error) { return nil, nil })
}
