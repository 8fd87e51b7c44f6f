package main

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestReadmeSynopsisIsGenerated keeps README.md's CLI synopsis what the
// command tree makes, so it cannot drift from the commands and flags the
// binary accepts.
func TestReadmeSynopsisIsGenerated(t *testing.T) {
	const path = "../../../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := replaceSynopsis(string(readme), synopsisBlock(synopsis(ctlTree(), synopsisWidth)))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	if want == string(readme) {
		return
	}
	got, wantLines := strings.Split(string(readme), "\n"), strings.Split(want, "\n")
	for i := 0; i < len(got) && i < len(wantLines); i++ {
		if got[i] != wantLines[i] {
			t.Fatalf("README.md's CLI synopsis is not what the command tree makes; run\n\tgo run ./internal/tools/genman -synopsis -readme README.md\nfirst difference, line %d:\n\tREADME:    %s\n\tgenerated: %s", i+1, got[i], wantLines[i])
		}
	}
	t.Fatalf("README.md's CLI synopsis is not what the command tree makes (%d lines, want %d); run\n\tgo run ./internal/tools/genman -synopsis -readme README.md", len(got), len(wantLines))
}

// TestSynopsisForms pins how a tree is rendered, on one made to hold
// every case.
func TestSynopsisForms(t *testing.T) {
	run := func(*cobra.Command, []string) error { return nil }
	root := &cobra.Command{Use: "ctl"}
	root.PersistentFlags().String("socket", "", "inherited: not shown")

	// A noun without flags of its own only prints its help: left out.
	pet := &cobra.Command{Use: "pet", RunE: run}
	add := &cobra.Command{Use: "add NAME", RunE: run}
	add.Flags().StringArray("tag", nil, "repeatable")
	add.Flags().String("owner-name", "", "value named after the flag")
	add.Flags().String("photo", "", "value named in backquotes: `FILE`")
	add.Flags().Bool("force", false, "a switch")
	add.Flags().String("secret", "", "hidden")
	_ = add.Flags().MarkHidden("secret")
	move := &cobra.Command{Use: "move NAME --to HOME", RunE: run}
	move.Flags().String("to", "", "named in the use line: not repeated")
	feed := &cobra.Command{Use: "feed NAME", RunE: run}
	feed.Flags().String("food", "", "required")
	_ = feed.MarkFlagRequired("food")
	pet.AddCommand(add, move, feed)

	// A noun with flags of its own does something itself.
	log := &cobra.Command{Use: "log", RunE: run}
	log.Flags().String("since", "", "")
	log.AddCommand(&cobra.Command{Use: "verify", RunE: run})

	// Lone commands share a line until it is full.
	status := &cobra.Command{Use: "status", RunE: run}
	backup := &cobra.Command{Use: "backup FILE", RunE: run}
	hidden := &cobra.Command{Use: "debug", RunE: run, Hidden: true}

	// Subcommands without arguments and with the same flags are one
	// command's choices.
	shell := &cobra.Command{Use: "shell"}
	for _, name := range []string{"bash", "zsh"} {
		c := &cobra.Command{Use: name, RunE: run}
		c.Flags().Bool("short", false, "")
		shell.AddCommand(c)
	}
	root.AddCommand(pet, log, status, backup, hidden, shell)

	got := synopsis(root, 40)
	want := `ctl pet add NAME [--tag TAG]... [--owner-name OWNER_NAME] [--photo FILE] [--force]
ctl pet move NAME --to HOME
ctl pet feed NAME --food FOOD
ctl log [--since SINCE] | log verify
ctl status | backup FILE
ctl shell bash|zsh [--short]
`
	if got != want {
		t.Errorf("synopsis:\n%s\nwant:\n%s", got, want)
	}
}

func TestReplaceSynopsis(t *testing.T) {
	readme := "# x\n" + synopsisBegin + "\n```\nold\n```\n" + synopsisEnd + "\nrest\n"
	got, err := replaceSynopsis(readme, "```\nnew\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "# x\n" + synopsisBegin + "\n```\nnew\n```\n" + synopsisEnd + "\nrest\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := replaceSynopsis("# x\n```\nold\n```\n", "```\nnew\n```\n"); err == nil {
		t.Error("no markers: no error")
	}
	if _, err := replaceSynopsis(synopsisBegin+"\n```\nold\n```\n", "```\nnew\n```\n"); err == nil {
		t.Error("no end marker: no error")
	}
}
