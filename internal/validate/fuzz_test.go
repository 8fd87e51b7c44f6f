package validate

import (
	"strings"
	"testing"
	"unicode"
)

// FuzzNameCheck: accepted names hold only what is safe in a URL path, a
// file name, a log line and a table cell.
func FuzzNameCheck(f *testing.F) {
	for _, s := range []string{"acme", "a-b", "-a", "A", "a\nb", "a/b", strings.Repeat("a", 64), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Name("org", s) != nil {
			return
		}
		if len(s) < 1 || len(s) > 63 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || s[0] == '-' || s[len(s)-1] == '-' {
			t.Fatalf("accepted %q", s)
		}
	})
}

// FuzzTextCheck: accepted free text has no control characters.
func FuzzTextCheck(f *testing.F) {
	for _, s := range []string{"ACME Corp", "Müller GmbH", "a\nb", "\x1b[31m", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Text("contact", s, 200) != nil {
			return
		}
		for _, r := range s {
			if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
				t.Fatalf("accepted %q with %U", s, r)
			}
		}
	})
}

// FuzzPublicKeyCheck: Parse never panics and accepts only 32-byte keys,
// each in the one spelling X25519 gives it.
func FuzzPublicKeyCheck(f *testing.F) {
	for _, s := range []string{"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ysw=", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "abc", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := PublicKey(s)
		if err != nil {
			return
		}
		if k == [32]byte{} {
			t.Fatal("accepted the all-zero key")
		}
		if k[31]&0x80 != 0 || canonical(k) != k {
			t.Fatalf("accepted %q, another spelling of a key", s)
		}
	})
}
