// Command docexamples prints the documents' systemd examples (the fenced
// blocks marked <!-- example: systemd -->) as one bash script, which
// scripts/test-systemd.sh runs in the container that boots the package:
// each command is announced with its document line, run as written, and the
// first that fails ends the script with that line.
//
//	go run ./internal/tools/docexamples [-host CMD]... FILE...
//
// A command given with -host (its trailing comment aside) is one the reader
// runs on the build machine, such as `make packages`: the caller runs it
// there, and the script only announces it.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/extranetgw/extranet/internal/doctest"
)

func main() {
	var host []string
	flag.Func("host", "a command the caller runs on the host (repeatable)", func(v string) error {
		host = append(host, v)
		return nil
	})
	flag.Parse()
	var docs []doc
	for _, name := range flag.Args() {
		text, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "docexamples:", err)
			os.Exit(1)
		}
		docs = append(docs, doc{name, string(text)})
	}
	if err := write(os.Stdout, docs, host); err != nil {
		fmt.Fprintln(os.Stderr, "docexamples:", err)
		os.Exit(1)
	}
}

type doc struct{ name, text string }

var comment = regexp.MustCompile(`\s+#.*$`)

// write prints the script. The caller gives every document, so an example
// in any of them runs; none at all, or a -host command no example has, is
// an error, so that examples that lose their markers (or change their
// commands) cannot silently stop being run.
func write(w io.Writer, docs []doc, host []string) error {
	onHost := map[string]bool{}
	for _, h := range host {
		onHost[h] = false
	}
	var b strings.Builder
	b.WriteString("# The documents' systemd examples, as written (internal/tools/docexamples).\nset -o pipefail\n")
	total := 0
	for _, d := range docs {
		blocks, err := doctest.Parse(d.text)
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		n := 0
		for _, bl := range blocks {
			if bl.Kind != doctest.Systemd {
				continue
			}
			n++
			for _, s := range bl.Steps() {
				// A transcript's output would go unchecked here.
				if !s.Script {
					return fmt.Errorf("%s:%d: a systemd example with prompts: make it a script", d.name, s.Line)
				}
				at := fmt.Sprintf("%s:%d", d.name, s.Line)
				bare := comment.ReplaceAllString(strings.TrimSpace(s.Command), "")
				if _, ok := onHost[bare]; ok {
					onHost[bare] = true
					fmt.Fprintf(&b, "echo %s\n", quote("+ "+at+" (on the host): "+s.Command))
					continue
				}
				// Every command of a line counts ("a; b", "a | b"), not
				// only the last.
				fmt.Fprintf(&b, "echo %s\n__err=0\ntrap '__err=$?' ERR\n{ %s\n} </dev/null\n__rc=$?\ntrap - ERR\n[ \"$__err\" = 0 ] || __rc=$__err\n[ \"$__rc\" = 0 ] || { echo %s \"$__rc\" >&2; exit 1; }\n",
					quote("+ "+at+": "+s.Command), s.Command, quote(at+": exit"))
			}
		}
		total += n
	}
	if total == 0 {
		return fmt.Errorf("no <!-- example: systemd --> block in %d documents", len(docs))
	}
	for _, h := range host {
		if !onHost[h] {
			return fmt.Errorf("-host %q: no systemd example runs it", h)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
