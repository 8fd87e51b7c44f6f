package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"

	"github.com/extranetgw/extranet/internal/doctest"
)

// The enrollment guide's config snippets are ones extranetd takes: every
// key they name is a config key, and their values, the proxy's on top of
// the first, pass validation. (e2e TestDocs starts the daemon with the
// first.)
func TestEnrollmentGuideConfig(t *testing.T) {
	raw, err := os.ReadFile("../../docs/enrollment.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := doctest.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.Endpoint = "vpn.example.com:51820"
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	cfg.BindFlags(fs)
	n := 0
	for _, b := range blocks {
		if b.Lang != "yaml" {
			continue
		}
		n++
		path := filepath.Join(t.TempDir(), "extranetd.yaml")
		if err := os.WriteFile(path, []byte(b.Text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := cfg.LoadFile(path, fs); err != nil {
			t.Errorf("docs/enrollment.md:%d: %v", b.Line, err)
		}
	}
	if n == 0 {
		t.Fatal("docs/enrollment.md shows no yaml block")
	}
	if cfg.EnrollListen == "" || len(cfg.EnrollTrustedProxies) == 0 {
		t.Errorf("the guide's config did not turn enrollment on behind a proxy: %+v", cfg)
	}
	if _, err := cfg.Validate(); err != nil {
		t.Errorf("docs/enrollment.md's config: %v", err)
	}
}
