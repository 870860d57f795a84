package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"hone/catalog"
	"hone/modelref"
	"hone/runs"
	"hone/server"
	"hone/serving"
	"hone/store"
)

// serviceFlags are shared by serve and worker.
type serviceFlags struct {
	home, db, hfHome string
	dataRoots        []string
	concurrency      int
	leaseTTL         time.Duration
	gang             runs.GangConfig
}

func (f *serviceFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.home, "home", "", "state directory (default $HONE_HOME or ~/.hone)")
	cmd.Flags().StringVar(&f.db, "db", "", "database: postgres://... for PostgreSQL (default SQLite at HOME/hone.db)")
	cmd.Flags().StringVar(&f.hfHome, "hf-home", "", "Hugging Face home whose hub/ cache resolves model ids (default $HF_HOME or ~/.cache/huggingface)")
	cmd.Flags().StringArrayVar(&f.dataRoots, "data-root", nil, "directory request paths must lie in (repeatable; default: HOME/data, and the current directory unless it is your home directory or /)")
	cmd.Flags().IntVar(&f.concurrency, "concurrency", 1, "runs this process trains at once")
	cmd.Flags().DurationVar(&f.leaseTTL, "lease-ttl", 30*time.Second, "a worker silent this long is presumed dead and its run resumes elsewhere")
	registerGangFlags(cmd, &f.gang)
}

type service struct {
	st   *store.Store
	cat  *catalog.Catalog
	runs *runs.Service
}

func (f *serviceFlags) open(ctx context.Context, work bool) (*service, error) {
	home, err := honeHome(f.home)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(home, "data"), 0o755); err != nil {
		return nil, err
	}
	roots := f.dataRoots
	if len(roots) == 0 {
		var err error
		if roots, err = runs.DefaultDataRoots(home); err != nil {
			return nil, err
		}
	}
	dsn := f.db
	if dsn == "" {
		dsn = filepath.Join(home, "hone.db")
	}
	log := logger()
	st, err := store.Open(ctx, store.Config{DSN: dsn})
	if err != nil {
		return nil, err
	}
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(home, "catalog"), Logger: log})
	if err != nil {
		st.Close()
		return nil, err
	}
	var svc *runs.Service
	models, err := modelref.New(modelref.Config{HFHome: f.hfHome, Catalog: cat,
		Confine: func(p string) (string, error) { return svc.Confine(p) }})
	if err != nil {
		st.Close()
		return nil, err
	}
	svc, err = runs.New(ctx, runs.Config{Store: st, Catalog: cat, Models: models, Home: home,
		DataRoots: roots, Logger: log, Work: work, Concurrency: f.concurrency, LeaseTTL: f.leaseTTL,
		DefaultUser: os.Getenv("USER"), Gang: f.gang})
	if err != nil {
		st.Close()
		return nil, err
	}
	return &service{st: st, cat: cat, runs: svc}, nil
}

func (s *service) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.runs.Stop(ctx); err != nil {
		logger().Warn("stop workers", "err", err)
	}
	s.st.Close()
}

func serveCmd() *cobra.Command {
	var f serviceFlags
	var addr, tlsCert, tlsKey string
	var tf tokenFlags
	var maxLoaded, maxQueue int
	var requestTimeout time.Duration
	var openAISchema string
	var maxUpload int64
	var kvMemory byteSize
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the HTTP API and a training worker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := logger()
			token, err := tf.resolve(func(msg string) { log.Warn(msg) })
			if err != nil {
				return err
			}
			if err := server.CheckListen(addr, token); err != nil {
				return err
			}
			if tf.token != "" {
				log.Warn("--token is visible to other users of this machine (ps): prefer --token-file or HONE_TOKEN")
			}
			svc, err := f.open(ctx, true)
			if err != nil {
				return err
			}
			defer svc.stop()
			models, err := serving.New(serving.Config{MaxLoaded: maxLoaded, MaxQueue: maxQueue, RequestTimeout: requestTimeout, Logger: log,
				KVMemory: int64(kvMemory)})
			if err != nil {
				return err
			}
			srv, err := server.New(server.Config{Runs: svc.runs, Catalog: svc.cat, Token: token, Logger: log, Serving: models,
				OpenAISchema: openAISchema, MaxUploadBytes: maxUpload})
			if err != nil {
				return err
			}
			hs, err := server.HTTPServer(srv, tlsCert, tlsKey)
			if err != nil {
				return err
			}
			return listenAndServe(ctx, hs, addr, token != "", svc.runs.Start)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "listen address HOST:PORT")
	cmd.Flags().StringVar(&tf.token, "token", "", "bearer token clients must send (default $HONE_TOKEN); required beyond loopback, at least 16 characters")
	cmd.Flags().StringVar(&tf.file, "token-file", "", "read the bearer token from this file (keeps it out of ps; chmod 600)")
	cmd.Flags().StringVar(&tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate (chain); needs --tls-key")
	cmd.Flags().StringVar(&tlsKey, "tls-key", "", "the PEM private key of --tls-cert")
	cmd.Flags().IntVar(&maxLoaded, "max-loaded-models", 1, "registered model versions kept in memory for /api/generate and /v1")
	cmd.Flags().IntVar(&maxQueue, "max-queue", 64, "completion requests that may wait for a place in the running batch; more are answered 429")
	cmd.Flags().DurationVar(&requestTimeout, "request-timeout", 10*time.Minute, "longest a completion request may take, waiting included; generation stops there with the text so far")
	cmd.Flags().StringVar(&openAISchema, "openai-schema", "main.openai", "catalog schema of the OpenAI fine-tuning API: /v1/files uploads live in its volume \"files\", fine-tuned models are registered in it (created when first used)")
	cmd.Flags().Int64Var(&maxUpload, "max-upload-bytes", 512<<20, "largest file accepted by POST /v1/files")
	cmd.Flags().Var(&kvMemory, "kv-memory", "KV cache the running completions may hold together, e.g. 8GiB (0 = no bound); a request whose prompt + max_tokens cannot fit is answered 400, others wait")
	return cmd
}

// listenAndServe listens on addr, starts the workers, serves until ctx ends
// and then shuts down, letting requests finish for up to 10 s.
func listenAndServe(ctx context.Context, hs *http.Server, addr string, auth bool, start func(context.Context) error) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if err := start(ctx); err != nil {
		ln.Close()
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- server.Serve(hs, ln) }()
	scheme := "http"
	if hs.TLSConfig != nil {
		scheme = "https"
	}
	logger().Info("hone serving", "url", scheme+"://"+ln.Addr().String(), "auth", auth)
	if host, _, _ := net.SplitHostPort(addr); scheme == "http" && !server.IsLoopback(host) {
		logger().Warn("serving plain HTTP beyond loopback: the token and data cross the network in clear; use --tls-cert and --tls-key")
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func workerCmd() *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Train runs from a shared PostgreSQL queue (no HTTP API)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if store.DialectOf(f.db) != store.Postgres {
				return errors.New("hone worker needs --db postgres://...: SQLite is only for a single hone serve")
			}
			svc, err := f.open(ctx, true)
			if err != nil {
				return err
			}
			defer svc.stop()
			if err := svc.runs.Start(ctx); err != nil {
				return err
			}
			logger().Info("hone worker started")
			<-ctx.Done()
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
