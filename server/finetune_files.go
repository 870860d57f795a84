package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"hone/catalog"
	"hone/store"
)

// The OpenAI fine-tuning API (/v1/files, /v1/fine_tuning/jobs) is a
// translation layer over the native runs API. Uploaded files live in the
// catalog volume <schema>.files (default main.openai.files), one file
// <id>.jsonl and its description <id>.json each, written atomically, so
// they survive restarts and are confined like any volume path; a job's
// training_file becomes the run's train_data_path /Volumes/.../<id>.jsonl.
// A job is a run in the experiment /openai/fine_tuning, its id "ftjob-"
// and the run's name; its fine_tuned_model is the version the run
// registered, <schema>.<run name or suffix>/N, which /v1/chat/completions
// serves.

const (
	oaiFilesPath     = "/v1/files"
	oaiVolume        = "files"
	oaiExperiment    = "/openai/fine_tuning"
	oaiJobPrefix     = "ftjob-"
	defaultMaxUpload = 512 << 20 // OpenAI's own limit for one file
)

var oaiFileIDRE = regexp.MustCompile(`^file-[0-9a-f]{24}$`)

// oaiFineTuning holds the fine-tuning API's settings.
type oaiFineTuning struct {
	schema    catalog.Name
	maxUpload int64
}

func newOAIFineTuning(schema string, maxUpload int64) (oaiFineTuning, error) {
	if schema == "" {
		schema = "main.openai"
	}
	n, err := catalog.ParseName(schema)
	if err != nil || n.Schema == "" || n.Model != "" {
		return oaiFineTuning{}, fmt.Errorf("server: OpenAI schema %q: want catalog.schema", schema)
	}
	if maxUpload == 0 {
		maxUpload = defaultMaxUpload
	}
	if maxUpload < 0 {
		return oaiFineTuning{}, fmt.Errorf("server: MaxUploadBytes %d: want a positive size", maxUpload)
	}
	return oaiFineTuning{schema: n, maxUpload: maxUpload}, nil
}

func (o oaiFineTuning) schemaName() string { return o.schema.Catalog + "." + o.schema.Schema }

// volumeDir is the /Volumes path of the files volume.
func (o oaiFineTuning) volumeDir() string {
	return "/Volumes/" + o.schema.Catalog + "/" + o.schema.Schema + "/" + oaiVolume
}

// dataPath is the volume path of an uploaded file's content.
func (o oaiFineTuning) dataPath(id string) string { return o.volumeDir() + "/" + id + ".jsonl" }

// fileID is the file id a run's data path names, or "" when the path is
// not an uploaded file (a run created with the native API).
func (o oaiFineTuning) fileID(p string) string {
	dir, base := pathSplit(strings.TrimPrefix(p, "dbfs:"))
	id := strings.TrimSuffix(base, ".jsonl")
	if dir != o.volumeDir() || !oaiFileIDRE.MatchString(id) {
		return ""
	}
	return id
}

func pathSplit(p string) (string, string) {
	i := strings.LastIndex(p, "/")
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// oaiFile is OpenAI's file object.
type oaiFile struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

// ensureOAISchema creates the schema and its files volume if missing, so the
// API works on a fresh server.
func (s *Server) ensureOAISchema(ctx context.Context) error {
	n := s.oai.schema
	for _, step := range []func() error{
		func() error { return s.cat.CreateCatalog(ctx, n.Catalog, "") },
		func() error {
			return s.cat.CreateSchema(ctx, s.oai.schemaName(), "OpenAI fine-tuning API: uploaded files and fine-tuned models")
		},
		func() error { _, err := s.cat.CreateVolume(ctx, s.oai.schemaName()+"."+oaiVolume); return err },
	} {
		if err := step(); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("prepare the OpenAI schema %s: %w", s.oai.schemaName(), err)
		}
	}
	return nil
}

func (s *Server) fileRoutes() {
	m := s.mux
	m.HandleFunc("POST "+oaiFilesPath, func(w http.ResponseWriter, r *http.Request) {
		// Data can take longer than the API read timeout (see volumeRoutes).
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadTimeout)) //nolint:errcheck // best effort
		f, err := s.uploadFile(w, r)
		if err != nil {
			s.ftFail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, f)
	})
	m.HandleFunc("GET "+oaiFilesPath, func(w http.ResponseWriter, r *http.Request) {
		fs, err := s.listFiles(r.Context(), r.URL.Query().Get("purpose"))
		if err != nil {
			s.ftFail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": fs, "has_more": false})
	})
	m.HandleFunc("GET "+oaiFilesPath+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		f, err := s.getFile(r.PathValue("id"))
		if err != nil {
			s.ftFail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, f)
	})
	m.HandleFunc("GET "+oaiFilesPath+"/{id}/content", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if _, err := s.getFile(id); err != nil {
			s.ftFail(w, r, err)
			return
		}
		p, err := s.cat.VolumePath(s.oai.dataPath(id))
		if err != nil {
			s.ftFail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeFile(w, r, p)
	})
	m.HandleFunc("DELETE "+oaiFilesPath+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := s.deleteFile(id); err != nil {
			s.ftFail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
	})
}

// uploadFile stores a multipart upload (fields purpose and file, in either
// order) in the files volume. The content streams to disk; nothing is
// kept of a refused upload.
func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request) (*oaiFile, error) {
	if err := s.ensureOAISchema(r.Context()); err != nil {
		return nil, err
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.oai.maxUpload)
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, badParam("file", fmt.Sprintf("request body: %v: send multipart/form-data with the fields purpose and file", err))
	}
	f := &oaiFile{ID: "file-" + randomID(), Object: "file", CreatedAt: s.clock().Unix(), Status: "processed"}
	stored := false
	keep := false
	defer func() {
		if stored && !keep {
			s.removeFileData(f.ID)
		}
	}()
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, uploadError(err, s.oai.maxUpload)
		}
		switch part.FormName() {
		case "purpose":
			b, err := io.ReadAll(io.LimitReader(part, 64))
			if err != nil {
				return nil, uploadError(err, s.oai.maxUpload)
			}
			f.Purpose = strings.TrimSpace(string(b))
		case "file":
			if stored {
				return nil, badParam("file", "send one file per upload")
			}
			if f.Filename = filepath.Base(part.FileName()); f.Filename == "." || f.Filename == "/" {
				f.Filename = "upload.jsonl" // the client named no file
			}
			e, err := s.cat.PutFile(r.Context(), s.oai.dataPath(f.ID), part)
			if err != nil {
				return nil, uploadError(err, s.oai.maxUpload)
			}
			stored, f.Bytes = true, e.Size
		}
		part.Close()
	}
	switch {
	case f.Purpose == "":
		return nil, badParam("purpose", "purpose is required: fine-tune")
	case f.Purpose != "fine-tune":
		return nil, badParam("purpose", fmt.Sprintf("purpose %q: hone takes files for fine-tune only", f.Purpose))
	case !stored:
		return nil, badParam("file", "file is required: the JSONL training or validation data")
	case f.Bytes == 0:
		return nil, badParam("file", fmt.Sprintf("file %s is empty", f.Filename))
	}
	meta, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	if _, err := s.cat.PutFile(r.Context(), s.oai.volumeDir()+"/"+f.ID+".json", bytes.NewReader(meta)); err != nil {
		return nil, err
	}
	keep = true
	s.log.Info("file uploaded", "file", f.ID, "filename", f.Filename, "bytes", f.Bytes)
	return f, nil
}

// uploadError names an upload over the size limit as such.
func uploadError(err error, limit int64) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return paramError{"file", tooLarge{fmt.Sprintf("the upload is over the server's limit of %d bytes (hone serve --max-upload-bytes)", limit)}}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pe paramError
	if errors.As(err, &pe) || errors.Is(err, catalog.ErrInvalid) {
		return err
	}
	return badParam("file", fmt.Sprintf("reading the upload: %v", err))
}

// tooLarge is a request over a size limit (HTTP 413).
type tooLarge struct{ msg string }

func (e tooLarge) Error() string { return e.msg }

func (s *Server) removeFileData(id string) {
	for _, p := range []string{s.oai.dataPath(id), s.oai.volumeDir() + "/" + id + ".json"} {
		if real, err := s.cat.VolumePath(p); err == nil {
			if err := os.Remove(real); err != nil {
				s.log.Warn("remove uploaded file", "file", id, "err", err)
			}
		}
	}
}

func fileNotFound(id string) error {
	return paramError{"id", fmt.Errorf("no such file: %s: %w", id, store.ErrNotFound)}
}

// getFile reads an uploaded file's description.
func (s *Server) getFile(id string) (*oaiFile, error) {
	if !oaiFileIDRE.MatchString(id) {
		return nil, fileNotFound(id)
	}
	p, err := s.cat.VolumePath(s.oai.volumeDir() + "/" + id + ".json")
	if err != nil {
		return nil, fileNotFound(id)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read file %s: %w", id, err)
	}
	var f oaiFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("read file %s: %w", id, err)
	}
	return &f, nil
}

// listFiles lists the uploaded files, newest first.
func (s *Server) listFiles(ctx context.Context, purpose string) ([]oaiFile, error) {
	out := []oaiFile{}
	es, err := s.cat.ListVolume(s.oai.volumeDir())
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, catalog.ErrInvalid) {
		return out, nil // nothing uploaded yet: no volume
	}
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		id, ok := strings.CutSuffix(e.Name, ".json")
		if !ok || !oaiFileIDRE.MatchString(id) {
			continue
		}
		f, err := s.getFile(id)
		if err != nil {
			continue // deleted meanwhile
		}
		if purpose == "" || f.Purpose == purpose {
			out = append(out, *f)
		}
	}
	slices.SortStableFunc(out, func(a, b oaiFile) int {
		if a.CreatedAt != b.CreatedAt {
			return int(b.CreatedAt - a.CreatedAt)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (s *Server) deleteFile(id string) error {
	if _, err := s.getFile(id); err != nil {
		return err
	}
	s.removeFileData(id)
	s.log.Info("file deleted", "file", id)
	return nil
}
