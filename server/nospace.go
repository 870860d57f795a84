package server

import (
	"errors"
	"io/fs"
	"os"
	"syscall"

	"hone/store"
)

// noSpaceMessage tells a client that the server's disk (or quota) is full
// and where: the path of the write that failed, which is the server's own
// storage (HONE_HOME, the catalog, a volume), never a secret. The rest of
// the error stays in the log.
func noSpaceMessage(err error) string {
	what := "no space left on device"
	if errors.Is(err, syscall.EDQUOT) {
		what = "disk quota exceeded"
	}
	var pe *fs.PathError
	var le *os.LinkError
	var de *store.NoSpaceError
	switch {
	case errors.As(err, &de):
		return what + " writing " + de.Where
	case errors.As(err, &pe):
		return what + " writing " + pe.Path
	case errors.As(err, &le):
		return what + " writing " + le.New
	}
	return what
}
