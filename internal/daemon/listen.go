package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// serveTCP serves h on addr until ctx ends; what names the listener in
// logs and errors. The daemon's TCP listeners (metrics, profiler) are off
// unless configured; its API is only ever the unix socket.
func serveTCP(ctx context.Context, what, addr string, h http.Handler, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listener: %w", what, err)
	}
	// No write timeout: a CPU profile answers only after its seconds pass.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info(what+" listening", "addr", l.Addr().String())
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(what+" server", "err", err)
		}
	}()
	return nil
}

// serveEnroll serves the enrollment page over TLS only. The certificate is
// read once, at start: a renewed one needs a restart, or a reverse proxy
// in front that holds it (docs/enrollment.md).
func serveEnroll(ctx context.Context, cfg Config, h http.Handler, log *slog.Logger) error {
	cert, err := tls.LoadX509KeyPair(cfg.EnrollTLSCert, cfg.EnrollTLSKey)
	if err != nil {
		return fmt.Errorf("enrollment TLS certificate: %w", err)
	}
	l, err := net.Listen("tcp", cfg.EnrollListen)
	if err != nil {
		return fmt.Errorf("enrollment listener: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		// TLS handshake failures of scanners are noise, not our errors.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("enrollment page listening", "addr", l.Addr().String())
	go func() {
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("enrollment server", "err", err)
		}
	}()
	return nil
}

// pprofHandler is Go's profiler. It starts before anything else, so the
// cold start itself can be profiled; config validation keeps it on
// loopback, as profiles are not for the network.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveFailsafe answers the other gateways' failsafe questions on addr
// (docs/cluster.md). A question is small and answered within a second: a
// peer that sends slowly, or too much, is cut off.
func serveFailsafe(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cluster-listen: %w", err)
	}
	// The answer waits for a look at etcd of up to 0.15 of the asker's
	// lease (9 s at the longest role-ttl): the write may take that long.
	srv := &http.Server{Handler: h, ReadTimeout: 2 * time.Second, WriteTimeout: 12 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 4 << 10}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("cluster failsafe listening", "addr", l.Addr().String())
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("cluster failsafe server", "err", err)
		}
	}()
	return nil
}
