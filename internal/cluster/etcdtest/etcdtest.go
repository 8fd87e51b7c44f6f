// Package etcdtest runs a real etcd inside a test (etcd's own embed
// package), of one member or several, for the cluster's tests: no mock
// stands in for the store the gateways share.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running etcd.
type Server struct {
	// URL is where clients reach it.
	URL string
	cfg *embed.Config
	e   *embed.Etcd
}

// TLS are the files of an etcd that serves clients over TLS and asks
// them for a certificate its CA signed.
type TLS struct {
	CAFile, CertFile, KeyFile string
}

// Start runs etcd with its data in dir, serving clients on host at a free
// port. Stop it with Stop.
func Start(dir, host string) (*Server, error) { return start(dir, host, nil) }

// StartTLS is Start, serving clients over TLS with t.
func StartTLS(dir, host string, t TLS) (*Server, error) { return start(dir, host, &t) }

// StartTLSOn is StartTLS on given ports, for an etcd that is killed and
// started again where its clients knew it (0 for ports: free ones).
func StartTLSOn(dir, host string, clientPort, peerPort int, t TLS) (*Server, error) {
	if clientPort == 0 {
		return start(dir, host, &t)
	}
	client := url.URL{Scheme: "http", Host: net.JoinHostPort(host, fmt.Sprint(clientPort))}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort(host, fmt.Sprint(peerPort))}
	s := configure(dir, client, peer, &t)
	if err := s.Restart(); err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	return s, nil
}

// PeerURL is where the other members reach this one.
func (s *Server) PeerURL() string { return s.cfg.ListenPeerUrls[0].String() }

func start(dir, host string, t *TLS) (*Server, error) {
	var lastErr error
	// A port found free may be taken before etcd binds it; try again.
	for range 3 {
		client, peer, err := freeURLs(host)
		if err != nil {
			return nil, err
		}
		s := configure(dir, client, peer, t)
		if lastErr = s.Restart(); lastErr == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("start etcd: %w", lastErr)
}

// configure is the Server of one member at client and peer.
func configure(dir string, client, peer url.URL, t *TLS) *Server {
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = dir
	// Its own complaints (a listener closed by Stop) are noise here;
	// what matters reaches the tests through the client.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// A gateway's state goes to etcd in one transaction at `cluster
	// init`; docs/cluster.md asks the same of a production etcd.
	cfg.MaxTxnOps = 100000
	cfg.MaxRequestBytes = 32 << 20
	if t != nil {
		client.Scheme = "https"
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = t.CertFile, t.KeyFile
		cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = t.CAFile, true
	}
	return &Server{URL: client.String(), cfg: cfg}
}

// Stop stops etcd; its data stays for Restart.
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Restart starts a stopped etcd again, at the same URLs, on its data.
func (s *Server) Restart() error {
	e, err := embed.StartEtcd(s.cfg)
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
		s.e = e
		return nil
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("etcd did not become ready within 30 s")
	}
}

func freeURLs(host string) (client, peer url.URL, err error) {
	var ports [2]int
	for i := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return url.URL{}, url.URL{}, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	client = url.URL{Scheme: "http", Host: net.JoinHostPort(host, fmt.Sprint(ports[0]))}
	peer = url.URL{Scheme: "http", Host: net.JoinHostPort(host, fmt.Sprint(ports[1]))}
	return client, peer, nil
}

// StartCluster runs n members of one etcd cluster on host, each with its
// data under dir, for tests of what happens when etcd loses its quorum:
// stop a majority, and the others keep their data and leases but cannot
// decide anything.
func StartCluster(dir, host string, n int) ([]*Server, error) {
	members := make([]*Server, n)
	var initial []string
	for i := range members {
		client, peer, err := freeURLs(host)
		if err != nil {
			return nil, err
		}
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		members[i] = &Server{URL: client.String(), cfg: cfg}
		initial = append(initial, cfg.Name+"="+peer.String())
	}
	errs := make(chan error, n)
	for _, m := range members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
		go func() { errs <- m.Restart() }()
	}
	var first error
	for range members {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		for _, m := range members {
			m.Stop()
		}
		return nil, fmt.Errorf("start an etcd of %d members: %w", n, first)
	}
	return members, nil
}
