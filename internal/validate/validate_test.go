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
