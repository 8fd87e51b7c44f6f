package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/extranetgw/extranet/internal/store"
	"github.com/extranetgw/extranet/pkg/api"
)

// TestAlertRulesInOperationsDoc: the example alert rules of
// docs/operations.md are valid YAML, and every extranet_ metric and label
// their expressions select is one /metrics serves. An alert on a name the
// daemon does not export never fires, and nothing says so.
func TestAlertRulesInOperationsDoc(t *testing.T) {
	raw, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "Example alerts:\n\n```yaml\n")
	if !ok {
		t.Fatal("docs/operations.md has no yaml block after \"Example alerts:\"")
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("the alert rules' yaml block is never closed")
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal([]byte(block), &rules); err != nil {
		t.Fatalf("the alert rules are not YAML: %v", err)
	}

	// A store where every series has a sample: an organisation with an
	// active peer that connected.
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	seen := time.Now().Add(-time.Minute)
	err = db.Update(func(tx *store.Tx) error {
		if err := tx.PutOrg(&store.Org{ID: 1, Name: "acme", State: api.StateActive}); err != nil {
			return err
		}
		return tx.PutPeer(&store.Peer{Org: "acme", Name: "laptop", State: api.StateActive, LastHandshake: &seen})
	})
	if err != nil {
		t.Fatal(err)
	}
	m := New(db, 3*time.Minute)
	m.Cluster(func() bool { return true }, func() int64 { return 1 })
	m.Role(func() (bool, int64) { return true, 4 }, func() int { return 1 })
	_, body := scrape(t, m.Handler(func() error { return nil }), "/metrics")
	// The labels of each series name, from the sample lines.
	labels := map[string]map[string]bool{}
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? `)
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	for _, l := range strings.Split(body, "\n") {
		m := sample.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if labels[m[1]] == nil {
			labels[m[1]] = map[string]bool{}
		}
		for _, lm := range label.FindAllStringSubmatch(m[2], -1) {
			labels[m[1]][lm[1]] = true
		}
	}

	selector := regexp.MustCompile(`\b(extranet_[a-z0-9_]+)(?:\{([^}]*)\})?`)
	matcher := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			for _, m := range selector.FindAllStringSubmatch(r.Expr, -1) {
				n++
				have, ok := labels[m[1]]
				if !ok {
					t.Errorf("alert %s: /metrics has no %s", r.Alert, m[1])
					continue
				}
				for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
					if !have[lm[1]] {
						t.Errorf("alert %s: %s has no label %s", r.Alert, m[1], lm[1])
					}
				}
			}
		}
	}
	if n == 0 {
		t.Error("the alert rules select no extranet_ metric: is this still the alerts' block?")
	}
}
