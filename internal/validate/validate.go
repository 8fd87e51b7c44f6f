// Package validate checks the names, free text and keys admins hand the
// gateway, with errors that name the bad value and say how to fix it. Nothing
// that fails here reaches the store, a rule, a config file or a log line.
package validate

import (
	"encoding/base64"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/curve25519"
)

// Name checks a DNS-label style name: 1-63 lowercase letters, digits and
// hyphens, starting and ending with a letter or digit. kind is "org" or
// "peer", used in the message.
func Name(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%s name is empty; use 1-63 lowercase letters, digits and hyphens", kind)
	}
	if len(s) > 63 {
		return fmt.Errorf("%s name %q is %d characters long; the limit is 63", kind, Printable(s), len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			fix := "use lowercase letters, digits and hyphens, starting and ending with a letter or digit"
			if lower := strings.ToLower(s); lower != s && Name(kind, lower) == nil {
				fix = fmt.Sprintf("write %q", lower)
			}
			return fmt.Errorf("%s name %q is not a DNS label; %s", kind, Printable(s), fix)
		}
	}
	return nil
}

// Text checks free text such as a display name or a contact: printable
// Unicode on one line, at most max bytes.
func Text(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s is %d bytes long; the limit is %d", field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", field)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			return fmt.Errorf("%s %q contains a control character; use printable text on one line", field, Printable(s))
		}
	}
	return nil
}

// Printable shortens bad input for echoing it back in an error; callers
// quote it with %q, which escapes anything that could break a terminal or a
// log line.
func Printable(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// PublicKey parses a WireGuard public key (base64 of 32 bytes) and refuses
// keys that would let anyone complete a handshake (all-zero and other
// low-order points of Curve25519), and keys that are another spelling of
// one (see canonical).
func PublicKey(s string) ([32]byte, error) {
	var k [32]byte
	raw, err := base64.StdEncoding.DecodeString(s)
	// The decoder skips newlines, so only the canonical text is accepted:
	// a key travels into config files and logs, one line each.
	if err != nil || len(raw) != 32 || base64.StdEncoding.EncodeToString(raw) != s {
		return k, fmt.Errorf("public key %q is not base64 of 32 bytes; copy it from `wg pubkey` on the partner's device", Printable(s))
	}
	copy(k[:], raw)
	// X25519 refuses points whose product with any scalar is zero, which is
	// exactly the set of low-order keys; a fixed scalar is enough to test.
	scalar := [32]byte{9}
	if _, err := curve25519.X25519(scalar[:], k[:]); err != nil {
		return k, fmt.Errorf("public key %q is a low-order (weak) point; generate a fresh key with `wg genkey | wg pubkey`", s)
	}
	if c := canonical(k); c != k {
		why := "it is 2^255-19 or more"
		if k[31]&0x80 != 0 {
			why = "bit 255 is set"
		}
		cs := base64.StdEncoding.EncodeToString(c[:])
		return k, fmt.Errorf("public key %q is %q written another way (%s; X25519 takes both as one device's key), which `wg pubkey` never writes; give %q", s, cs, why, cs)
	}
	return k, nil
}

// canonical is the one spelling of k that wg pubkey writes. X25519 ignores
// bit 255 and reduces the rest modulo p = 2^255-19, so every other
// spelling names the same device, under a key the store has not seen.
func canonical(k [32]byte) [32]byte {
	k[31] &= 0x7f
	// Below 2^255, only p+0 to p+18 are p or more: little-endian, a first
	// byte of 0xed to 0xff, thirty bytes of 0xff and a last one of 0x7f.
	if k[31] != 0x7f || k[0] < 0xed {
		return k
	}
	for _, b := range k[1:31] {
		if b != 0xff {
			return k
		}
	}
	return [32]byte{k[0] - 0xed}
}
