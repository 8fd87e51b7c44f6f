package doctest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = "Intro.\n\n<!-- example -->\n```\n$ extranetctl role list\nSUBJECT  ROLE\n@extranet  admin\n\nalice$ extranetctl org grant acme \\\n    10.30.0.0/16\nerror: alice may not (…): needs admin\nalice$ echo $?\n5\n```\n<!-- run: enroll laptop \"$P\" -->\n\n<!-- not run: a receiver's config -->\n```sh\ncurl x\n```\n\n<!-- example -->\n```sh\nmake build   # comment\n# only a comment\n\nbin/extranetctl status\n```\n\n```\ndiagram\n```\n"

func TestParseAndSteps(t *testing.T) {
	blocks, err := Parse(sample)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 5 {
		t.Fatalf("%d blocks, want 5", len(blocks))
	}
	if blocks[1].Kind != Hidden || blocks[1].Text != "enroll laptop \"$P\"\n" {
		t.Errorf("the hidden step: %+v", blocks[1])
	}
	blocks = append(blocks[:1], blocks[2:]...)
	if blocks[0].Kind != Example || blocks[1].Kind != NotRun || blocks[1].Reason != "a receiver's config" || blocks[3].Kind != "" {
		t.Errorf("kinds: %+v", blocks)
	}
	steps := blocks[0].Steps()
	if len(steps) != 3 {
		t.Fatalf("steps: %+v", steps)
	}
	if steps[0].User != "" || steps[0].Want != "SUBJECT  ROLE\n@extranet  admin\n" || steps[0].Line != 5 {
		t.Errorf("step 0: %+v", steps[0])
	}
	if steps[1].User != "alice" || steps[1].Command != "extranetctl org grant acme \\\n    10.30.0.0/16" || !steps[1].WantsFailure() {
		t.Errorf("step 1: %+v", steps[1])
	}
	if steps[2].WantsFailure() || steps[2].Want != "5\n" {
		t.Errorf("step 2: %+v", steps[2])
	}
	script := blocks[2].Steps()
	if len(script) != 2 || !script[0].Script || script[1].Command != "bin/extranetctl status" {
		t.Errorf("script steps: %+v", script)
	}
	if bad := Check(blocks); len(bad) != 0 {
		t.Errorf("Check: %v", bad)
	}
	if bad := Check([]Block{{Lang: "sh", Line: 3}}); len(bad) != 1 {
		t.Errorf("an unmarked shell block passes Check")
	}
	if bad := Check([]Block{{Kind: Example, Text: "groupadd x\n$ extranetctl role list\n"}}); len(bad) != 1 {
		t.Errorf("a command before the first prompt passes Check: %v", bad)
	}
	if _, err := Parse("<!-- example -->\ntext\n```\nx\n```\n"); err == nil {
		t.Errorf("a marker away from its block is accepted")
	}
	for _, doc := range []string{"~~~sh\nrm x\n~~~\n", "````sh\nrm x\n```\nstill in\n````\n", "```Shell {.numberLines}\nrm x\n```\n", "1. Do:\n   ```\n   $ rm x\n   ```\n"} {
		b, err := Parse(doc)
		if err != nil || len(b) != 1 || len(Check(b)) != 1 {
			t.Errorf("%q: %+v, %v: an unmarked shell block passes Check", doc, b, err)
		}
	}
	if b, _ := Parse("````sh\nrm x\n```\nstill in\n````\n"); len(b) != 1 || !strings.Contains(b[0].Text, "still in") {
		t.Errorf("a longer fence closes at a shorter one: %+v", b)
	}
	if bad := Check([]Block{{Kind: Example, Lang: "console", Text: "# rm -rf x\n"}}); len(bad) == 0 {
		t.Errorf("an example that runs nothing passes Check")
	}
	multi, err := Parse("<!-- run:\na b\nc\n-->\n")
	if err != nil || len(multi) != 1 || multi[0].Text != "a b\nc\n" || len(multi[0].Steps()) != 2 {
		t.Errorf("a hidden step over lines: %+v, %v", multi, err)
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		want, got string
		ok        bool
	}{
		{"a  b\n", "a  b   \n", true},
		{"a\n", "a\nb\n", false},
		{"error: x (…): y\n", "error: x (organisation acme, a long text): y\n", true},
		{"41   2026-11-29T10:02:11Z  alice\n", "41   2026-12-07T06:12:00Z  alice\n", true},
		{"41   2026-11-29T10:02:11Z  alice\n", "42   2026-12-07T06:12:00Z  alice\n", false},
		{"Invite acme/f7gcynnc: 3\n", "Invite acme/a2bcdefg: 3\n", true},
		{"Invite acme/f7gcynnc: 3\n", "Invite acme/abc: 3\n", false},
		{"Invite acme/f7gcynnc: 3\n", "Invite globex/zzzzzzzz: 3\n", false},
		{"Restored /var/lib/extranet/extranet.db\n", "Restored /var/lib/tmpstate/extranet.db\n", false},
		{"socket /run/extranet/extranetd.sock\n", "socket /tmp/whatever/extranetd.sock\n", false},
		{"at 1999-99-99 99:99\n", "at 2026-12-07 10:00\n", false},
		{"https://h:8443/enroll#0peQgVa3A5ay-mMQ5xRp526tMsYDJNesdYP3-LfuqE4\n", "https://h:8443/enroll#Xa_QgVa3A5ay-mMQ5xRp526tMsYDJNesdYP3-LfuqE4\n", true},
		{"PublicKey = hHjz1p5q0yR7Hc4x2nDg8vS0o4b0b9q6Zy3mJzX1lE0=\n", "PublicKey = AAAz1p5q0yR7Hc4x2nDg8vS0o4b0b9q6Zy3mJzX1lE0=\n", true},
		{"a.b\n", "axb\n", false},
		{"Created:  2026-12-07 06:03 by nina\n", "Created:  2027-01-01 00:00 by nina\n", true},
		{"Name: acme\n…\n", "Name: acme\nA: 1\nB: 2\n", true},
		{"Name: acme\n…\nB: 2\n", "Name: acme\nA: 1\nB: 2\n", true},
		{"…\n", "", true},
		{"Name: acme\n…\nC: 3\n", "Name: acme\nA: 1\nB: 2\n", false},
		{"Name: acme\n…\n", "Name: globex\nA: 1\n", false},
	} {
		if got := Match(c.want, c.got); got != c.ok {
			t.Errorf("Match(%q, %q) = %v, want %v", c.want, c.got, got, c.ok)
		}
	}
}

func TestRefs(t *testing.T) {
	blocks, err := Parse("<!-- example -->\n```\n$ extranetctl request list\nREQUEST        INVITE\nacme/t2wk97gx  acme/f7gcynnc\n$ extranetctl request approve acme/t2wk97gx\n$ extranetctl invite revoke acme/f7gcynnc\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	steps := blocks[0].Steps()
	if refs := Refs(steps, 1); len(refs) != 1 || refs[0] != (Ref{Value: "acme/t2wk97gx", Step: 0, Line: 2, Nth: 1}) {
		t.Errorf("refs of the approve: %+v", refs)
	}
	if refs := Refs(steps, 2); len(refs) != 1 || refs[0].Nth != 2 {
		t.Errorf("refs of the revoke: %+v", refs)
	}
	if refs := Refs(steps, 0); len(refs) != 0 {
		t.Errorf("refs of the list: %+v", refs)
	}
	cut, err := Parse("<!-- example -->\n```\n$ extranetctl request list\nREQUEST\n…\nacme/t2wk97gx\n$ extranetctl request approve acme/t2wk97gx\n$ sudo install -m 600 k /var/lib/extranet/k\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	if refs := Refs(cut[0].Steps(), 1); len(refs) != 0 {
		t.Errorf("a ref to a line after a … (whose printed line is not known): %+v", refs)
	}
	if refs := Refs(cut[0].Steps(), 2); len(refs) != 0 {
		t.Errorf("a path taken for an id: %+v", refs)
	}
}

func TestRewriteKeepsWhatMatches(t *testing.T) {
	blocks, err := Parse(sample)
	if err != nil {
		t.Fatal(err)
	}
	b := blocks[0]
	got := []string{"SUBJECT  ROLE\n@extranet  admin\nalice  sponsor\n", "error: alice may not (organisation acme): needs admin\n", "5\n"}
	want := "$ extranetctl role list\nSUBJECT  ROLE\n@extranet  admin\nalice  sponsor\n\nalice$ extranetctl org grant acme \\\n    10.30.0.0/16\nerror: alice may not (…): needs admin\nalice$ echo $?\n5\n"
	if out := b.Rewrite(b.Steps(), got); out != want {
		t.Errorf("Rewrite:\n%s\nwant:\n%s", out, want)
	}
}

// TestEveryShellBlockIsMarked: a command shown in README.md or docs/ is run
// by a test, or says why not (e2e TestDocs runs the examples).
func TestEveryShellBlockIsMarked(t *testing.T) {
	docs, _ := filepath.Glob("../../docs/*.md")
	docs = append(docs, "../../README.md")
	examples := 0
	for _, path := range docs {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks, err := Parse(string(raw))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		for _, bad := range Check(blocks) {
			t.Errorf("%s: %s", strings.TrimPrefix(path, "../../"), bad)
		}
		for _, b := range blocks {
			if b.Kind == Example {
				examples++
			}
		}
	}
	if examples == 0 {
		t.Errorf("no examples found in %v", docs)
	}
}
