package server

import (
	"net/http"
	"time"

	"hone/client"
)

// volumeFiles is the prefix of the volume file upload route.
const volumeFiles = "/api/fs/files/Volumes/"

// uploadTimeout bounds reading one uploaded file.
const uploadTimeout = 2 * time.Hour

// volumeRoutes serves catalog volumes: creating one, and the files API
// (paths as in the hosted product, /api/fs/files/Volumes/...), so data can
// be put on a remote server.
func (s *Server) volumeRoutes() {
	m := s.mux
	m.HandleFunc("POST /api/catalog/volumes", s.handler(201, func(r *http.Request) (any, error) {
		var req client.CreateVolumeRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		if _, err := s.cat.CreateVolume(r.Context(), req.Name); err != nil {
			return nil, err
		}
		return &client.Volume{Name: req.Name}, nil
	}))
	put := s.handler(201, func(r *http.Request) (any, error) {
		e, err := s.cat.PutFile(r.Context(), "/Volumes/"+r.PathValue("path"), r.Body)
		if err != nil {
			return nil, err
		}
		return client.VolumeEntry(*e), nil
	})
	m.HandleFunc("PUT "+volumeFiles+"{path...}", func(w http.ResponseWriter, r *http.Request) {
		// A data file can take longer than the server's read timeout, which
		// is sized for API requests: an upload gets its own, longer one.
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadTimeout)) //nolint:errcheck // best effort
		put(w, r)
	})
	m.HandleFunc("GET /api/fs/directories/Volumes/{path...}", s.handler(200, func(r *http.Request) (any, error) {
		es, err := s.cat.ListVolume("/Volumes/" + r.PathValue("path"))
		out := make([]client.VolumeEntry, 0, len(es))
		for _, e := range es {
			out = append(out, client.VolumeEntry(e))
		}
		return &client.VolumeListing{Entries: out}, err
	}))
}
