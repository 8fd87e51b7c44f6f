package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"

	"github.com/extranetgw/extranet/internal/doctest"
)

// The guides' config snippets are ones extranetd takes: every key they
// name is a config key, and their values, each on top of the one before,
// pass validation. (e2e TestDocs starts the daemon with the enrollment
// guide's first; TestActivitySyslog runs the activity guide's receiver.)
func TestGuideConfigs(t *testing.T) {
	for doc, took := range map[string]func(Config) bool{
		"enrollment.md": func(c Config) bool { return c.EnrollListen != "" && len(c.EnrollTrustedProxies) > 0 },
		"activity.md":   func(c Config) bool { return c.ActivitySyslog != "" },
	} {
		cfg := guideConfig(t, doc)
		if !took(cfg) {
			t.Errorf("docs/%s's config did not take: %+v", doc, cfg)
		}
		if _, err := cfg.Validate(); err != nil {
			t.Errorf("docs/%s's config: %v", doc, err)
		}
	}
}

// guideConfig loads every yaml block of docs/NAME, in order, onto the
// defaults.
func guideConfig(t *testing.T, name string) Config {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", name))
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
			t.Errorf("docs/%s:%d: %v", name, b.Line, err)
		}
	}
	if n == 0 {
		t.Fatalf("docs/%s shows no yaml block", name)
	}
	return cfg
}
