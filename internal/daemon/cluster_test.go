package daemon

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/cluster/etcdtest"
	"github.com/extranetgw/extranet/internal/store"
)

// TestClusterInitOverTLS: `extranetd cluster init` reaches an etcd that
// serves over TLS and asks for client certificates (a real etcd, run by the
// test), with the gateway's CA, certificate and key; without its
// certificate it is refused, and without the CA it does not trust etcd.
func TestClusterInitOverTLS(t *testing.T) {
	dir := t.TempDir()
	serverTLS, clientTLS, err := etcdtest.WriteCerts(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := etcdtest.StartTLS(filepath.Join(dir, "etcd"), "127.0.0.1", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("etcd serves at %s, want https", srv.URL)
	}
	state := filepath.Join(dir, "state")
	db, err := store.Open(filepath.Join(state, DBFile), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	initCmd := func(extra ...string) (string, error) {
		cmd := NewRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"cluster", "init", "--state-dir", state, "--etcd-endpoints", srv.URL}, extra...))
		err := cmd.Execute()
		return out.String(), err
	}
	ca := []string{"--etcd-ca-file", clientTLS.CAFile}
	cert := []string{"--etcd-cert-file", clientTLS.CertFile, "--etcd-key-file", clientTLS.KeyFile}
	if _, err := initCmd(ca...); err == nil {
		t.Error("cluster init without a client certificate reached an etcd that asks for one")
	}
	if _, err := initCmd(cert...); err == nil {
		t.Error("cluster init trusted an etcd whose CA it was not given")
	}
	if out, err := initCmd(append(ca, cert...)...); err != nil || !strings.Contains(out, "the cluster's state is this gateway's") {
		t.Errorf("cluster init over TLS: %v\n%s", err, out)
	}
}
