package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/extranetgw/extranet/pkg/api"
	"github.com/extranetgw/extranet/pkg/wgconfig"
)

func newPeerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "peer",
		Aliases: []string{"peers"},
		Short:   "Manage partner devices (peers), addressed as ORG/NAME",
		RunE:    groupRun,
	}
	cmd.AddCommand(
		newPeerIssueCmd(g), newPeerListCmd(g), newPeerShowCmd(g), newPeerConfigCmd(g),
		newPeerStateCmd(g, "suspend", "Cut a peer off, keeping its keys"),
		newPeerStateCmd(g, "resume", "Let a suspended or expired peer connect again"),
		newPeerRevokeCmd(g), newPeerRotateCmd(g), newPeerExtendCmd(g), newPeerMoveCmd(g),
	)
	return cmd
}

// completePeers offers ORG/NAME of peers that are not revoked.
func completePeers(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		peers, err := g.client().ListPeers(g.ctx(), "", "")
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, p := range peers {
			if id := p.ID(); p.State != api.StateRevoked && strings.HasPrefix(id, toComplete) {
				out = append(out, id)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// configOutput is how `peer issue`, `peer rotate` and `peer config` hand
// over a client config.
type configOutput struct {
	out   string
	qr    bool
	qrPNG string
	// The files of out and qrPNG, opened before the request (open).
	outFile, pngFile *secretFile
}

func (c *configOutput) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.out, "out", "", "write the config to `FILE` (mode 0600) instead of standard output; name it NAME.conf, NAME being the tunnel's name (at most 15 of a-z A-Z 0-9 _=+.-)")
	f.BoolVar(&c.qr, "qr", false, "print the config as a QR code for the WireGuard mobile apps")
	f.StringVar(&c.qrPNG, "qr-png", "", "write the config as a QR code PNG to `FILE` (mode 0600)")
}

// writeSecret writes a file only its owner can read, replacing any old one
// of the caller's own (see openSecretFile).
func writeSecret(path string, data []byte) error {
	sf, err := openSecretFile(path)
	if err != nil {
		return err
	}
	return sf.write(data)
}

// secretFile is a file a config or its QR code is to go to, opened
// before anything is issued: a private key the gateway made for a file
// that then cannot be written would be in nobody's hands.
type secretFile struct {
	path    string
	f       *os.File
	created bool
}

// openSecret opens path for a secret (openSecretFile); a path it refuses
// is a usage error, said before anything is issued.
func openSecret(flag, path string) (*secretFile, error) {
	sf, err := openSecretFile(path)
	if err != nil {
		return nil, usagef("%s %s: %v; nothing was issued or changed", flag, path, err)
	}
	return sf, nil
}

// openSecretFile opens path for a secret: a new file, or an existing
// regular one of the caller's own, with no other name, that will be
// replaced. It is made 0600 here, so that one the caller may not chmod is
// refused before anything changes. Anything else is refused and never
// chmodded: a directory, a device such as /dev/null, a pipe, a symlink
// (followed, it would write wherever it points), and a file someone else
// owns or links to (in a shared directory such as /tmp, another user could
// have planted it to read the key).
func openSecretFile(path string) (*secretFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	created := err == nil
	if errors.Is(err, fs.ErrExist) {
		// Non-blocking, so a pipe without a reader is an error, not a
		// hang; a regular file is unaffected.
		f, err = os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
		if errors.Is(err, syscall.ELOOP) {
			err = errors.New("it is a symbolic link; give the path of a file")
		}
	}
	if err != nil {
		return nil, err
	}
	sf := &secretFile{path: path, f: f, created: created}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		m, kind := fi.Mode(), "special file"
		switch {
		case m&fs.ModeDevice != 0:
			kind = "device"
		case m&fs.ModeNamedPipe != 0:
			kind = "named pipe"
		}
		err = fmt.Errorf("it is a %s, not a regular file", kind)
	}
	if err == nil {
		st, _ := fi.Sys().(*syscall.Stat_t)
		switch {
		case st == nil:
		case int(st.Uid) != os.Geteuid():
			err = fmt.Errorf("it belongs to user %d, who could read the key; remove it or choose another path", st.Uid)
		case st.Nlink != 1:
			err = fmt.Errorf("it has %d names (hard links), through which others could read the key; remove it or choose another path", st.Nlink)
		}
	}
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err != nil {
		sf.discard()
		return nil, err
	}
	return sf, nil
}

// write replaces the file's contents with data, on disk before it
// returns. A file that cannot take it is removed if it was new.
func (sf *secretFile) write(data []byte) error {
	err := sf.f.Truncate(0)
	if err == nil {
		_, err = sf.f.Write(data)
	}
	if err == nil {
		err = sf.f.Sync()
	}
	if cerr := sf.f.Close(); err == nil {
		err = cerr
	}
	if err != nil && sf.created {
		_ = os.Remove(sf.path)
	}
	return err
}

// discard closes a file nothing was written to, and removes it if it was
// new.
func (sf *secretFile) discard() {
	sf.f.Close()
	if sf.created {
		_ = os.Remove(sf.path)
	}
}

// open opens --out and --qr-png before the request that makes the config.
func (c *configOutput) open() error {
	var err error
	if c.out != "" {
		if c.outFile, err = openSecret("--out", c.out); err != nil {
			return err
		}
	}
	if c.qrPNG != "" {
		if c.pngFile, err = openSecret("--qr-png", c.qrPNG); err != nil {
			c.close()
			return err
		}
	}
	return nil
}

// close gives up the files open opened and emit did not write: the
// request failed, or its answer went out as JSON.
func (c *configOutput) close() {
	for _, sf := range []**secretFile{&c.outFile, &c.pngFile} {
		if *sf != nil {
			(*sf).discard()
			*sf = nil
		}
	}
}

func (c *configOutput) wantsQR() bool { return c.qr || c.qrPNG != "" }

// qrWithoutKey refuses a QR code for a config that will hold no private
// key, before anything is issued or changed. what is the command and
// instead what to do for a QR code that works.
func qrWithoutKey(what, instead string) error {
	return usagef("%s makes a config without the device's private key, and the WireGuard phone apps cannot import a QR code without one (iOS says only \"Invalid QR Code\"): "+
		"write the config with --out FILE and let the partner paste the private key in the app, or %s", what, instead)
}

// emit hands over cfg as asked. When that fails, cfg goes to standard
// output after all: it may hold a private key that exists nowhere else.
func (c *configOutput) emit(g *globals, id, cfg string) error {
	err := c.deliver(g, id, cfg)
	c.close()
	if err == nil {
		return nil
	}
	fmt.Fprint(g.env.Out, cfg)
	return fmt.Errorf("%w; the config is printed on standard output instead, so that no private key in it is lost", err)
}

func (c *configOutput) deliver(g *globals, id, cfg string) error {
	// QR codes first: one that cannot be made leaves no file behind.
	var png []byte
	var qr string
	var err error
	if c.qrPNG != "" {
		if png, err = wgconfig.QRPNG([]byte(cfg), 512); err != nil {
			return fmt.Errorf("QR code of %s: %w", id, err)
		}
	}
	if c.qr {
		if qr, err = wgconfig.QRTerminal([]byte(cfg)); err != nil {
			return fmt.Errorf("QR code of %s: %w", id, err)
		}
	}
	if c.outFile != nil {
		err := c.outFile.write([]byte(cfg))
		c.outFile = nil
		if err != nil {
			return fmt.Errorf("write config of %s: %w", id, err)
		}
		fmt.Fprintf(g.env.ErrOut, "Wrote the config of %s to %s.\n", id, c.out)
		// A warning, not a refusal: the file may be renamed before it is
		// handed over, and Windows and macOS accept more names.
		if err := wgconfig.CheckFileName(c.out); err != nil {
			fmt.Fprintf(g.env.ErrOut, "warning: %s will not import as a tunnel: %v. Rename it before handing it over, for example to %s.\n", c.out, err, wgconfig.SuggestFileName(c.out))
		}
	}
	if c.pngFile != nil {
		err := c.pngFile.write(png)
		c.pngFile = nil
		if err != nil {
			return fmt.Errorf("write QR code of %s: %w", id, err)
		}
		fmt.Fprintf(g.env.ErrOut, "Wrote the QR code of %s to %s.\n", id, c.qrPNG)
	}
	if c.qr {
		fmt.Fprint(g.env.Out, qr)
	}
	if c.out == "" && !c.wantsQR() {
		fmt.Fprint(g.env.Out, cfg)
	}
	return nil
}

func newPeerIssueCmd(g *globals) *cobra.Command {
	var req api.IssuePeerRequest
	var co configOutput
	cmd := &cobra.Command{
		Use:   "issue ORG/NAME",
		Short: "Create a peer and print its client config",
		Long: `Create a peer with an address from its organisation's block and print a
wg-quick config that stock WireGuard apps import. Without --public-key the
gateway generates the key pair: the private key is in this output only and is
never stored, so hand it to the partner now.`,
		Example: `  extranetctl peer issue acme/laptop-1 --out laptop-1.conf
  extranetctl peer issue acme/phone --qr --expires 90d
  extranetctl peer issue acme/server --public-key "$(cat server.pub)"`,
		Args: exactArgs(1, "a peer as ORG/NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitPeer(args[0])
			if err != nil {
				return err
			}
			if req.PublicKey != "" && co.wantsQR() {
				return qrWithoutKey("peer issue --public-key", "issue without --public-key so that the gateway makes the key pair")
			}
			req.Name = name
			if !g.json() {
				if err := co.open(); err != nil {
					return err
				}
				defer co.close()
			}
			res, err := g.client().IssuePeer(g.ctx(), org, req)
			if err != nil {
				return err
			}
			if g.json() {
				return errors.Join(printJSON(g.env.Out, res), notInForce(res))
			}
			if res.Peer.KeyOrigin == api.KeyGenerated {
				fmt.Fprintf(g.env.ErrOut, "Issued %s with address %s. The private key in this config is stored nowhere else: hand it to the partner now.\n", res.Peer.ID(), res.Peer.Address)
			} else {
				fmt.Fprintf(g.env.ErrOut, "Issued %s with address %s for the partner's own key.\n", res.Peer.ID(), res.Peer.Address)
			}
			return errors.Join(co.emit(g, res.Peer.ID(), res.Config), notInForce(res))
		},
	}
	cmd.Flags().StringVar(&req.PublicKey, "public-key", "", "the partner's own WireGuard public `KEY` (its private key never leaves its device)")
	cmd.Flags().StringVar(&req.Expires, "expires", "", "expiry: `DATE` (2027-01-31), RFC 3339 time or DURATION (90d)")
	cmd.Flags().StringVar(&req.Group, "group", "", "the organisation's access group the peer joins (default: the group \"default\", which reaches the organisation's whole grant)")
	cmd.RegisterFlagCompletionFunc("group", completeGroupFlag(g))
	co.bind(cmd)
	return cmd
}

func newPeerListCmd(g *globals) *cobra.Command {
	var org, state string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List peers",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			peers, err := g.client().ListPeers(g.ctx(), org, state)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, peers)
			}
			now := g.env.Now()
			t := newTable(g.env.Out, "PEER", "GROUP", "ADDRESS", "STATE", "LAST SEEN", "RX", "TX", "EXPIRES")
			for _, p := range peers {
				t.row(p.ID(), p.Group, p.Address, p.State, lastSeen(now, p), bytesHuman(p.RxBytes), bytesHuman(p.TxBytes), date(p.Expires))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&org, "org", "", "only peers of this organisation")
	cmd.Flags().StringVar(&state, "state", "", "only peers in this state: active, suspended, expired or revoked")
	_ = cmd.RegisterFlagCompletionFunc("org", completeOrgs(g))
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions([]string{"active", "suspended", "expired", "revoked"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newPeerShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "show ORG/NAME",
		Short:             "Show one peer",
		Args:              exactArgs(1, "a peer as ORG/NAME"),
		ValidArgsFunction: completePeers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitPeer(args[0])
			if err != nil {
				return err
			}
			p, err := g.client().GetPeer(g.ctx(), org, name)
			if err != nil {
				return err
			}
			return printPeer(g, p)
		},
	}
}

func printPeer(g *globals, p api.Peer) error {
	if g.json() {
		return printJSON(g.env.Out, p)
	}
	kv := []string{
		"Peer", p.ID(),
		"Group", p.Group,
		"State", p.State,
	}
	if p.Suspension != "" {
		// Why the gateway suspended it by itself; an admin's suspension
		// needs no reason here (the audit log names who).
		kv = append(kv, "Suspension", p.Suspension)
	}
	return fields(g.env.Out, append(kv,
		"Address", p.Address,
		"Public key", p.PublicKey,
		"Key origin", p.KeyOrigin,
		"Last seen", lastSeen(g.env.Now(), p),
		"Endpoint", orDash(p.Endpoint),
		"Traffic", fmt.Sprintf("%s received, %s sent", bytesHuman(p.RxBytes), bytesHuman(p.TxBytes)),
		"Expires", date(p.Expires),
		"Created", fmt.Sprintf("%s by %s", date(&p.CreatedAt), p.CreatedBy),
	)...)
}

func newPeerConfigCmd(g *globals) *cobra.Command {
	var co configOutput
	cmd := &cobra.Command{
		Use:               "config ORG/NAME",
		Short:             "Print a peer's client config again (without the private key, which was shown once)",
		Args:              exactArgs(1, "a peer as ORG/NAME"),
		ValidArgsFunction: completePeers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitPeer(args[0])
			if err != nil {
				return err
			}
			if co.wantsQR() {
				return qrWithoutKey("peer config", fmt.Sprintf("run 'extranetctl peer rotate %s --qr' for new keys as a QR code", args[0]))
			}
			if !g.json() {
				if err := co.open(); err != nil {
					return err
				}
				defer co.close()
			}
			c, err := g.client().PeerConfig(g.ctx(), org, name)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(g.env.Out, c)
			}
			return co.emit(g, args[0], c.Config)
		},
	}
	co.bind(cmd)
	// Hidden, not removed: an admin who tries them learns why they are refused.
	_ = cmd.Flags().MarkHidden("qr")
	_ = cmd.Flags().MarkHidden("qr-png")
	return cmd
}

func newPeerStateCmd(g *globals, verb, short string) *cobra.Command {
	return &cobra.Command{
		Use:               verb + " ORG/NAME",
		Short:             short,
		Args:              exactArgs(1, "a peer as ORG/NAME"),
		ValidArgsFunction: completePeers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitPeer(args[0])
			if err != nil {
				return err
			}
			p, err := g.client().PeerAction(g.ctx(), org, name, verb)
			if err != nil {
				return err
			}
			return printPeer(g, p)
		},
	}
}

func newPeerRevokeCmd(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:               "revoke ORG/NAME",
		Short:             "Revoke a peer for good: its connections are cut and its key can never return",
		Args:              exactArgs(1, "a peer as ORG/NAME"),
		ValidArgsFunction: completePeers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitPeer(args[0])
			if err != nil {
				return err
			}
			if !yes {
				// A caller who may not see the peer, or a name that
				// does not exist, is told so before being asked.
				if _, err := g.client().GetPeer(g.ctx(), org, name); err != nil {
					return err
				}
				// One who may see it but not revoke it, too.
				if _, err := g.client().Checking().PeerAction(g.ctx(), org, name, "revoke"); err != nil {
					return err
				}
			}
			if err := confirm(g, yes, "revoking "+args[0], args[0]); err != nil {
				return err
			}
			p, err := g.client().PeerAction(g.ctx(), org, name, "revoke")
			if err != nil {
				return err
			}
			return printPeer(g, p)
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func newPeerRotateCmd(g *globals) *cobra.Command {
	var req api.RotateRequest
	var co configOutput
	cmd := &cobra.Command{
		Use:               "rotate ORG/NAME",
		Short:             "Give a peer new keys; the old config stops working at once",
		Args:              exactArgs(1, "a peer as ORG/NAME"),
		ValidArgsFunction: completePeers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitPeer(args[0])
			if err != nil {
				return err
			}
			if req.PublicKey != "" && co.wantsQR() {
				return qrWithoutKey("peer rotate --public-key", "rotate without --public-key so that the gateway makes the key pair")
			}
			if !g.json() {
				if err := co.open(); err != nil {
					return err
				}
				defer co.close()
			}
			res, err := g.client().RotatePeer(g.ctx(), org, name, req)
			if err != nil {
				return err
			}
			if g.json() {
				return errors.Join(printJSON(g.env.Out, res), notInForce(res))
			}
			if res.Warning == "" {
				fmt.Fprintf(g.env.ErrOut, "Rotated the keys of %s; the old config no longer connects.\n", res.Peer.ID())
			} else {
				fmt.Fprintf(g.env.ErrOut, "Rotated the keys of %s; the old config may still connect until the change is in force.\n", res.Peer.ID())
			}
			return errors.Join(co.emit(g, res.Peer.ID(), res.Config), notInForce(res))
		},
	}
	cmd.Flags().StringVar(&req.PublicKey, "public-key", "", "the partner's new public `KEY` (default: generate a new pair)")
	co.bind(cmd)
	return cmd
}

func newPeerExtendCmd(g *globals) *cobra.Command {
	var expires string
	cmd := &cobra.Command{
		Use:               "extend ORG/NAME --expires DATE|DURATION|never",
		Short:             "Set a peer's expiry",
		Args:              exactArgs(1, "a peer as ORG/NAME"),
		ValidArgsFunction: completePeers(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			org, name, err := splitPeer(args[0])
			if err != nil {
				return err
			}
			if expires == "" {
				return usagef("pass --expires DATE, DURATION or never")
			}
			p, err := g.client().ExtendPeer(g.ctx(), org, name, expires)
			if err != nil {
				return err
			}
			return printPeer(g, p)
		},
	}
	cmd.Flags().StringVar(&expires, "expires", "", "new expiry: DATE, RFC 3339 time, DURATION, or never")
	return cmd
}

// notInForce turns the warning of a peer that is saved but not yet in
// force into an error, once its config has been shown: the command then
// fails (exit 1) without losing the config.
func notInForce(res api.IssuedPeer) error {
	if res.Warning == "" {
		return nil
	}
	return &api.Error{Code: api.CodeNotApplied, Message: res.Warning}
}
