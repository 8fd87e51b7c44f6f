package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func newBackupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent copy of the gateway's state while it runs (mode 0600)",
		Long: `Write a consistent copy of the state database, taken in one read transaction
while the gateway keeps serving. It is written to FILE.partial (a new file,
mode 0600) and renamed to FILE only once every byte arrived; a stream cut
short is an error and leaves neither. It holds preshared keys: keep it like a key.
Restore it with ` + "`extranetd restore FILE`" + ` while the daemon is stopped. Back up the
gateway's key (state directory, gateway.key) too, or partners need new configs.`,
		Args: exactArgs(1, "a FILE to write"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			// A new file, never one that is already there: a link planted
			// at the name is not followed, and a leftover is not reused.
			tmp := path + ".partial"
			f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("backup: %s already exists (left by an interrupted backup?); remove it and run the backup again", tmp)
			}
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			n, err := g.client().Backup(g.ctx(), f)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(tmp, path)
			}
			if err != nil {
				os.Remove(tmp)
				return fmt.Errorf("%w; nothing was written to %s", err, path)
			}
			if g.json() {
				return printJSON(g.env.Out, map[string]any{"file": path, "bytes": n})
			}
			fmt.Fprintf(g.env.Out, "Wrote %d bytes to %s.\n", n, path)
			return nil
		},
	}
}

func newImportCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "import FILE.csv",
		Short: "Create organisations, groups and peers (with partners' own public keys) from CSV, all or nothing",
		Long: `Create organisations, their access groups and peers from CSV, as they were
on the gateway that exported them. The header is
  kind,org,name,display_name,contact,grants,public_key,expires,
  state,created_at,blocks,address,preshared_key,key_origin,last_handshake,group
An org row fills org, display_name, contact, grants (space-separated),
expires, state, created_at and blocks; a group row, after its org's, fills
org, name and grants (within the org's); a peer row fills org, name,
public_key, expires, state, created_at, address, preshared_key, key_origin,
last_handshake and group (empty: the default group). Only kind, org, name
and public_key are required; the original eight-column files (up to
expires) still import. Every row is checked first; if any is bad nothing
is imported and each bad row and field is named. ` + "`extranetctl export`" + ` writes the same format.`,
		Args: exactArgs(1, "a CSV FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("import: %w", err)
			}
			res, err := g.client().Import(g.ctx(), string(data))
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, res)
			}
			fmt.Fprintf(g.env.Out, "Imported %s, %s and %s.\n", count(res.Orgs, "organisation"), count(res.Groups, "group"), count(res.Peers, "peer"))
			return nil
		},
	}
}

func newExportCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "export [FILE.csv]",
		Short: "Write organisations and peers as CSV, the import format (it holds preshared keys)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			csv, err := g.client().Export(g.ctx())
			if err != nil {
				return err
			}
			if len(args) == 0 {
				_, err = fmt.Fprint(g.env.Out, csv)
				return err
			}
			return writeSecret(args[0], []byte(csv))
		},
	}
}

// count is n things, in the singular for one.
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
