package export

import (
	"fmt"
	"os"
	"path/filepath"

	"hone/engine"
)

// mergedSource is dir itself for a model directory. For a PEFT adapter
// directory (a version registered with --register-adapter) it is the
// adapter merged into its base (engine.MergeDirs: W + scale·B·A computed
// in fp32, stored in the base checkpoint's dtype), written to a temporary
// directory beside out that cleanup removes.
func mergedSource(dir, out string) (string, func(), error) {
	if !engine.IsAdapterDir(dir) {
		return dir, func() {}, nil
	}
	base, err := engine.AdapterBaseDir(dir)
	if err != nil {
		return "", nil, fmt.Errorf("export %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".hone-merged-*")
	if err != nil {
		return "", nil, fmt.Errorf("export %s: %w", dir, err)
	}
	cleanup := func() { os.RemoveAll(tmp) }
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err == nil {
		err = engine.MergeDirs(base, dir, tmp, dev)
	}
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("export %s: merge the adapter into its base %s: %w", dir, base, err)
	}
	return tmp, cleanup, nil
}
