package validate

import (
	"encoding/hex"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestName(t *testing.T) {
	for _, ok := range []string{"acme", "a", "a-1", "0", strings.Repeat("a", 63)} {
		if err := Name("org", ok); err != nil {
			t.Errorf("Name(%q): %v", ok, err)
		}
	}
	for _, tc := range []struct{ in, mention string }{
		{"", "empty"}, {"ACME", `write "acme"`}, {"-a", "DNS label"}, {"a-", "DNS label"}, {"a.b", "DNS label"},
		{"a_b", "DNS label"}, {"a b", "DNS label"}, {"a\nb", `"a\nb"`}, {"é", "DNS label"}, {strings.Repeat("a", 64), "limit is 63"},
	} {
		err := Name("org", tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("Name(%q) = %v; want mention of %q", tc.in, err, tc.mention)
		}
	}
}

func TestText(t *testing.T) {
	if err := Text("contact", "Müller GmbH, +49 30 1234", 200); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"a\nb", "a\tb", "\x1b[31m", string([]byte{0xff}), strings.Repeat("x", 201)} {
		if Text("contact", bad, 200) == nil {
			t.Errorf("Text(%q) accepted", bad)
		}
	}
}

func TestPublicKey(t *testing.T) {
	k, _ := wgtypes.GeneratePrivateKey()
	if _, err := PublicKey(k.PublicKey().String()); err != nil {
		t.Errorf("real key refused: %v", err)
	}
	pub := k.PublicKey().String()
	for _, bad := range []string{"", "abc", "AAAA", strings.Repeat("A", 43) + "=" + "A", pub[:20] + "\n" + pub[20:], pub[:20] + "\r" + pub[20:]} {
		if _, err := PublicKey(bad); err == nil {
			t.Errorf("PublicKey(%q) accepted", bad)
		}
	}
	// Low-order points of Curve25519: a handshake with them yields a
	// predictable shared secret.
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		raw, _ := hex.DecodeString(h)
		var kk wgtypes.Key
		copy(kk[:], raw)
		if _, err := PublicKey(kk.String()); err == nil || !strings.Contains(err.Error(), "low-order") {
			t.Errorf("low-order key %s: %v", h[:8], err)
		}
	}
}

// TestPublicKeyHasOneSpelling: X25519 ignores bit 255 of a public key and
// reduces it modulo 2^255-19, so a key with that bit set, or a number of
// the field's size or more, names the same device as a key wg pubkey
// writes: two peers with one key that the key-reuse check cannot see.
// No tool makes such a key, so it is refused, naming the spelling to use.
func TestPublicKeyHasOneSpelling(t *testing.T) {
	for range 20 {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		pub := k.PublicKey()
		if _, err := PublicKey(pub.String()); err != nil {
			t.Fatalf("real key %s refused: %v", pub, err)
		}
		alias := pub
		alias[31] |= 0x80
		_, err = PublicKey(alias.String())
		if err == nil || !strings.Contains(err.Error(), alias.String()) || !strings.Contains(err.Error(), "bit 255") || !strings.Contains(err.Error(), pub.String()) {
			t.Fatalf("key %s (bit 255 set, the same device as %s): %v; want a refusal naming both and the bit", alias, pub, err)
		}
	}
	// 2^255-19+2 is the point 2: an alias of a key that is not low-order.
	big, _ := hex.DecodeString("efffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
	var kk wgtypes.Key
	copy(kk[:], big)
	if _, err := PublicKey(kk.String()); err == nil || !strings.Contains(err.Error(), kk.String()) || !strings.Contains(err.Error(), "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=") {
		t.Errorf("key %s (2^255-17, the same point as 2): %v; want a refusal naming the canonical key", kk, err)
	}
}
