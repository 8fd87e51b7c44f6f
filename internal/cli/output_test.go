package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestTablesEscapeControlCharacters: a cell that holds a control
// character (a partner's text, say, in a request's source or an audit
// actor) is printed quoted and escaped, so it can neither drive the
// admin's terminal nor forge a row; other cells are printed as they are.
func TestTablesEscapeControlCharacters(t *testing.T) {
	var out bytes.Buffer
	tb := newTable(&out, "FROM", "ACTOR")
	tb.row("fe80::1%\x1b]0;pwned\x07", "partner@1.2.3.4\nacme/laptop  approved")
	tb.row("203.0.113.7", "tab\there")
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	if err := fields(&out, "Source", "a\x1b[2Jb"); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.ContainsAny(got, "\x1b\x07\t") || strings.Count(got, "\n") != 4 {
		t.Errorf("a control character reached the terminal:\n%q", got)
	}
	for _, want := range []string{`"fe80::1%\x1b]0;pwned\a"`, `"partner@1.2.3.4\nacme/laptop  approved"`, `"tab\there"`, `"a\x1b[2Jb"`, "203.0.113.7"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, `"203.0.113.7"`) || strings.Contains(got, `"FROM"`) {
		t.Errorf("a plain cell was quoted:\n%s", got)
	}
}
