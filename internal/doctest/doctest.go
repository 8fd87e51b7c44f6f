// Package doctest reads the worked examples out of the project's Markdown
// documents, so that a test can run each one as written and compare what it
// printed with what the document shows.
//
// A fenced block is an example when the line before it is a marker:
//
//	<!-- example -->                run by the end-to-end suite (e2e TestDocs)
//	<!-- example: systemd -->       run by scripts/test-systemd.sh, in the
//	                                container that boots the package
//	<!-- not run: REASON -->        shown, never run; REASON says why
//
// and a comment "<!-- run: CMD -->" (or with the commands on the lines up
// to "-->") is a step of the story the reader does not see, such as a
// partner enrolling between an invite and its approval: TestDocs runs it in
// its place, and it must succeed. It may read what the example before it
// printed from the file $P.
//
// and Check refuses a document with a shell block that carries no marker,
// so a new example cannot be added without being run (or a reason given).
//
// Inside an example, a line "$ CMD" or "USER$ CMD" is a command (run as
// root, or as that unix user) and the lines up to the next command are what
// it prints, stdout and stderr as a terminal shows them. A block without
// any prompt is a script: every line is a command, whose output the
// document does not show, and each must succeed.
package doctest

import (
	"bufio"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Kinds of block.
const (
	Example = "example"
	Systemd = "systemd"
	NotRun  = "not run"
	Hidden  = "run"
)

// Block is one fenced block of a document.
type Block struct {
	Kind   string // Example, Systemd, NotRun, or "" without a marker
	Reason string // why a NotRun block is not run
	Lang   string // the fence's info string
	Line   int    // the line of the opening fence, from 1
	Text   string // the lines between the fences, each ending in "\n"
}

// Step is one command of an example and what the document shows it print.
type Step struct {
	User    string // "" for root
	Command string // continuation lines joined
	Want    string // the shown output, "" when none is shown
	Line    int    // the command's line in the document
	Script  bool   // from a block without prompts: output not shown

	// Where Want is in the block's lines, for Rewrite.
	wantAt, wantLen int
}

var (
	markerRE = regexp.MustCompile(`^<!--\s*(example(?::\s*systemd)?|not run:\s*(.+?))\s*-->\s*$`)
	promptRE = regexp.MustCompile(`^(?:([a-z_][a-z0-9_-]*))?\$ (.*)$`)
	fenceRE  = regexp.MustCompile("^(```+|~~~+)")
)

// Parse splits a Markdown document into its fenced blocks.
func Parse(doc string) ([]Block, error) {
	var (
		blocks  []Block
		cur     *Block
		fence   string
		indent  int
		pending string
		reason  string
		lineNo  int
	)
	sc := bufio.NewScanner(strings.NewReader(doc))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if cur != nil {
			// CommonMark: a closing fence is of the opening's character,
			// at least as long, with nothing after it.
			if t := strings.TrimSpace(line); strings.HasPrefix(t, fence) && strings.Trim(t, fence[:1]) == "" {
				blocks = append(blocks, *cur)
				cur = nil
				continue
			}
			// A block in a list item is indented as its fence is.
			for i := 0; i < indent && strings.HasPrefix(line, " "); i++ {
				line = line[1:]
			}
			cur.Text += line + "\n"
			continue
		}
		trimmed := strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(trimmed, "<!-- run:"); ok {
			if pending != "" {
				return nil, fmt.Errorf("line %d: a marker (%s) must be right before a fenced block", lineNo-1, pending)
			}
			hidden := Block{Kind: Hidden, Line: lineNo}
			for {
				body, closed := strings.CutSuffix(strings.TrimSpace(rest), "-->")
				if body = strings.TrimSpace(body); body != "" {
					hidden.Text += body + "\n"
				}
				if closed {
					break
				}
				if !sc.Scan() {
					return nil, fmt.Errorf("line %d: a <!-- run: comment is never closed", hidden.Line)
				}
				lineNo++
				rest = sc.Text()
			}
			blocks = append(blocks, hidden)
			continue
		}
		if f := fenceRE.FindString(trimmed); f != "" {
			fence, indent = f, len(line)-len(strings.TrimLeft(line, " "))
			lang, _, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(trimmed, f)), " ")
			lang = strings.ToLower(strings.Trim(lang, "{}."))
			cur = &Block{Kind: pending, Reason: reason, Lang: lang, Line: lineNo}
			pending, reason = "", ""
			continue
		}
		if m := markerRE.FindStringSubmatch(trimmed); m != nil {
			switch {
			case m[2] != "":
				pending, reason = NotRun, m[2]
			case strings.Contains(m[1], "systemd"):
				pending = Systemd
			default:
				pending = Example
			}
			continue
		}
		if trimmed != "" && pending != "" {
			return nil, fmt.Errorf("line %d: a marker (%s) must be right before a fenced block", lineNo-1, pending)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur != nil {
		return nil, fmt.Errorf("line %d: a fenced block is never closed", cur.Line)
	}
	return blocks, nil
}

// Runnable tells whether a block reads like something to type: a shell
// block, or one with a prompt. Such a block needs a marker.
func (b Block) Runnable() bool {
	switch b.Lang {
	case "sh", "bash", "console", "shell", "zsh", "shell-session", "sh-session":
		return true
	}
	for _, l := range strings.Split(b.Text, "\n") {
		if promptRE.MatchString(l) {
			return true
		}
	}
	return false
}

// Check names every shell block of a document that has no marker.
func Check(blocks []Block) []string {
	var bad []string
	for _, b := range blocks {
		if b.Kind == "" && b.Runnable() {
			bad = append(bad, fmt.Sprintf("line %d: a shell block with no marker: put <!-- example --> before it (or <!-- not run: why -->)", b.Line))
		}
		if (b.Kind == Example || b.Kind == Systemd) && len(b.Steps()) == 0 {
			bad = append(bad, fmt.Sprintf("line %d: an example with no command in it (prompts are \"$ \" or \"USER$ \")", b.Line))
		}
		if b.Kind == Example && b.transcript() {
			for i, l := range strings.Split(b.Text, "\n") {
				if promptRE.MatchString(l) {
					break
				}
				if strings.TrimSpace(l) != "" {
					bad = append(bad, fmt.Sprintf("line %d: %q comes before the first prompt of an example, where it would not run: give it a prompt (\"$ \" for root)", b.Line+1+i, l))
				}
			}
		}
	}
	return bad
}

// transcript tells whether the block has prompts, which make the lines
// after each one its output; without, every line is a command.
func (b Block) transcript() bool {
	for _, l := range strings.Split(b.Text, "\n") {
		if promptRE.MatchString(l) {
			return true
		}
	}
	return false
}

// Steps splits an example into its commands.
func (b Block) Steps() []Step {
	lines := strings.Split(strings.TrimSuffix(b.Text, "\n"), "\n")
	transcript := b.transcript()
	var steps []Step
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		at := b.Line + 1 + i
		cmd, user := "", ""
		if transcript {
			m := promptRE.FindStringSubmatch(l)
			if m == nil {
				if len(steps) > 0 {
					steps[len(steps)-1].wantLen++
				}
				continue // text before the first prompt
			}
			user, cmd = m[1], m[2]
		} else {
			cmd = l
			if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
				continue
			}
		}
		for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
			i++
			cmd += "\n" + lines[i]
		}
		steps = append(steps, Step{User: user, Command: cmd, Line: at, Script: !transcript, wantAt: i + 1})
	}
	for i := range steps {
		s := &steps[i]
		// A blank line closes a transcript's output: it separates one
		// person's session from the next.
		for s.wantLen > 0 && strings.TrimSpace(lines[s.wantAt+s.wantLen-1]) == "" {
			s.wantLen--
		}
		for _, l := range lines[s.wantAt : s.wantAt+s.wantLen] {
			s.Want += l + "\n"
		}
	}
	return steps
}

// Rewrite returns the block's text with each step's shown output replaced
// by got (one entry per step), except where the shown output already
// matches: there the document's "…" and values stay as they are.
func (b Block) Rewrite(steps []Step, got []string) string {
	lines := strings.Split(strings.TrimSuffix(b.Text, "\n"), "\n")
	var out []string
	at := 0
	for i, s := range steps {
		if s.Script || Match(s.Want, got[i]) {
			continue
		}
		out = append(out, lines[at:s.wantAt]...)
		out = append(out, splitLines(got[i])...)
		at = s.wantAt + s.wantLen
	}
	out = append(out, lines[at:]...)
	return strings.Join(out, "\n") + "\n"
}

// WantsFailure tells whether the shown output is a refusal: an "error:"
// line. The command must then fail; otherwise it must succeed.
func (s Step) WantsFailure() bool {
	for _, l := range strings.Split(s.Want, "\n") {
		if strings.HasPrefix(l, "error: ") {
			return true
		}
	}
	return false
}

// What differs from run to run, matched by shape: times, keys, the
// random names of invites and requests, and the links that carry a token.
// Each turns a value the document shows into a regexp for what may stand
// in its place.
type shape struct {
	find func(string) [][]int
	repl func(string) string
}

var volatile = []shape{
	shapeOf(`\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-5]\d(?:\.\d+)?Z`),
	shapeOf(`\d{4}-[01]\d-[0-3]\d [0-2]\d:[0-5]\d\b`),
	shapeOf(`[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=`),
	shapeOf(`#[A-Za-z0-9_-]{43}\b`),
	// An id keeps its organisation: only the random part may differ.
	{ids, func(v string) string {
		org, _, _ := strings.Cut(v, "/")
		return regexp.QuoteMeta(org+"/") + idChars
	}},
}

// shapeOf is a volatile value of one regexp's shape.
func shapeOf(expr string) shape {
	re := regexp.MustCompile(expr)
	return shape{
		find: func(s string) [][]int { return re.FindAllStringIndex(s, -1) },
		repl: func(string) string { return "(?:" + expr + ")" },
	}
}

// idChars is the random part of an invite's or a request's id, ORG/ID,
// in the alphabet of service.newID.
const idChars = `[a-km-np-z2-9]{8}`

var idRE = regexp.MustCompile(`[a-z][a-z0-9-]*/` + idChars)

// ids finds ORG/ID in s, where it stands alone: not a part of a path such
// as /var/lib/extranet or of a longer word.
func ids(s string) [][]int {
	var out [][]int
	for _, m := range idRE.FindAllStringIndex(s, -1) {
		if m[0] > 0 && strings.ContainsRune("/.-_", rune(s[m[0]-1])) || m[0] > 0 && isWord(s[m[0]-1]) {
			continue
		}
		if m[1] < len(s) && (strings.ContainsRune("/.-_", rune(s[m[1]])) || isWord(s[m[1]])) {
			continue
		}
		out = append(out, m)
	}
	return out
}

func isWord(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// IDPerl finds the ids of a line as ids does, for the shell: perl, which
// is in every Debian (perl-base is essential).
const IDPerl = `(?<![\/.\w-])([a-z][a-z0-9-]*\/` + idChars + `)(?![\/.\w-])`

// A Ref is an id that a command names and an earlier command printed, as
// the document shows both: the run must name the id that really printed
// there, as the reader copies it from the screen.
type Ref struct {
	Value string // as the document shows it
	Step  int    // the earlier step, an index into steps
	Line  int    // the line of its shown output, from 1
	Nth   int    // which id of that line, from 1
}

// Refs returns the refs of steps[i]'s command, each to the latest step
// before it that shows the id. Only lines before a "…" line count: after
// one, the shown line's number is not the printed one's.
func Refs(steps []Step, i int) []Ref {
	var refs []Ref
	seen := map[string]bool{}
	cmd := steps[i].Command
	for _, m := range ids(cmd) {
		v := cmd[m[0]:m[1]]
		if seen[v] {
			continue
		}
		seen[v] = true
	find:
		for j := i - 1; j >= 0; j-- {
			for l, line := range splitLines(steps[j].Want) {
				if line == "…" {
					break
				}
				for n, m := range ids(line) {
					if line[m[0]:m[1]] == v {
						refs = append(refs, Ref{Value: v, Step: j, Line: l + 1, Nth: n + 1})
						break find
					}
				}
			}
		}
	}
	return refs
}

// pattern turns one shown line into a regexp: "…" stands for any text, and
// the volatile values for any value of the same shape.
func pattern(line string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i, part := range strings.Split(line, "…") {
		if i > 0 {
			b.WriteString(".*")
		}
		b.WriteString(volatilePattern(part))
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func volatilePattern(s string) string {
	type span struct {
		from, to int
		re       string
	}
	var spans []span
	for _, v := range volatile {
		for _, m := range v.find(s) {
			overlap := false
			for _, o := range spans {
				if m[0] < o.to && o.from < m[1] {
					overlap = true
				}
			}
			if !overlap {
				spans = append(spans, span{m[0], m[1], v.repl(s[m[0]:m[1]])})
			}
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].from < spans[j].from })
	var b strings.Builder
	at := 0
	for _, sp := range spans {
		b.WriteString(regexp.QuoteMeta(s[at:sp.from]))
		b.WriteString(sp.re)
		at = sp.to
	}
	b.WriteString(regexp.QuoteMeta(s[at:]))
	return b.String()
}

// Match tells whether what a command printed is what the document shows,
// line by line, trailing spaces aside. A shown line that is "…" alone
// stands for any number of lines, so a long output can be cut.
func Match(want, got string) bool {
	return matchLines(splitLines(want), splitLines(got))
}

func matchLines(w, g []string) bool {
	for i := range w {
		if w[i] == "…" {
			for skip := 0; i+skip <= len(g); skip++ {
				if matchLines(w[i+1:], g[i+skip:]) {
					return true
				}
			}
			return false
		}
		if i >= len(g) || !pattern(w[i]).MatchString(g[i]) {
			return false
		}
	}
	return len(w) == len(g)
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " \t")
	}
	return lines
}
