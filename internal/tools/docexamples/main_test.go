package main

import (
	"os/exec"
	"strings"
	"testing"
)

const guide = "# Guide\n" +
	"\n" +
	"<!-- example -->\n" +
	"```sh\n" +
	"echo not-systemd\n" +
	"```\n" +
	"\n" +
	"<!-- example: systemd -->\n" +
	"```sh\n" +
	"make packages      # on the build machine\n" +
	"x='it''s'; echo \"$x\"   # state carries to the next line\n" +
	"echo \"$x\" two \\\n" +
	"  lines\n" +
	"false              # fails\n" +
	"echo after-false\n" +
	"```\n"

// run writes the script for docs and runs it with bash.
func run(t *testing.T, docs []doc, host []string) (stdout, stderr string, err error) {
	t.Helper()
	var script strings.Builder
	if err := write(&script, docs, host); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", script.String())
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func TestScriptRunsSystemdExamplesAsWritten(t *testing.T) {
	out, stderr, err := run(t, []doc{{"guide.md", guide}}, []string{"make packages"})
	if err == nil {
		t.Fatalf("the script succeeded past `false`:\n%s", out)
	}
	want := "+ guide.md:10 (on the host): make packages      # on the build machine\n" +
		"+ guide.md:11: x='it''s'; echo \"$x\"   # state carries to the next line\n" +
		"its\n" +
		"+ guide.md:12: echo \"$x\" two \\\n  lines\n" +
		"its two lines\n" +
		"+ guide.md:14: false              # fails\n"
	if out != want {
		t.Errorf("printed:\n%s\nwant:\n%s", out, want)
	}
	if want := "guide.md:14: exit 1\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
}

// TestEveryCommandOfALineCounts: "a; b" and "a | b" fail when a does.
func TestEveryCommandOfALineCounts(t *testing.T) {
	for _, line := range []string{"false; true", "false | true"} {
		out, stderr, err := run(t, []doc{{"g.md", "<!-- example: systemd -->\n```sh\n" + line + "\n```\n"}}, nil)
		if err == nil || !strings.Contains(stderr, "g.md:3: exit 1") {
			t.Errorf("%q: %v, %q, %q; want it to fail at g.md:3", line, err, out, stderr)
		}
	}
}

func TestRefusesWhatWouldNotRun(t *testing.T) {
	for _, c := range []struct {
		name string
		docs []doc
		host []string
		want string
	}{
		{"no systemd block", []doc{{"a.md", "<!-- example -->\n```sh\ntrue\n```\n"}}, nil, "no <!-- example: systemd --> block in 1 documents"},
		{"host command absent", []doc{{"g.md", guide}}, []string{"make install"}, `-host "make install": no systemd example runs it`},
		{"a transcript", []doc{{"t.md", "<!-- example: systemd -->\n```console\n$ true\n```\n"}}, nil, "t.md:3: a systemd example with prompts"},
	} {
		err := write(&strings.Builder{}, c.docs, c.host)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}
