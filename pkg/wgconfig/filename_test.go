package wgconfig

import (
	"strings"
	"testing"
)

func TestCheckFileName(t *testing.T) {
	for _, tc := range []struct {
		path string
		why  string // empty: imports
		fix  string
	}{
		{"laptop-1.conf", "", ""},
		{"/etc/wireguard/a_b=c+d.e-f.conf", "", ""},
		{"dir.with spaces/x.conf", "", ""},
		{"123456789012345.conf", "", ""},
		{"1234567890123456.conf", "16 characters", "123456789012345.conf"},
		{"out/laptop-of-alice-smith.conf", "21 characters", "out/laptop-of-alice.conf"},
		{"my laptop.conf", `" "`, "my-laptop.conf"},
		{"café.conf", `"é"`, "caf-.conf"},
		{".conf", "empty", "tunnel.conf"},
		{"laptop.txt", "does not end in .conf", "laptop.conf"},
		{"laptop.CONF", "does not end in .conf", "laptop.conf"},
		{"laptop", "does not end in .conf", "laptop.conf"},
	} {
		err := CheckFileName(tc.path)
		if tc.why == "" {
			if err != nil {
				t.Errorf("%q: %v, want it to import", tc.path, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%q: %v, want a reason naming %q", tc.path, err, tc.why)
		}
		fix := SuggestFileName(tc.path)
		if fix != tc.fix || CheckFileName(fix) != nil {
			t.Errorf("%q: suggested %q, want %q", tc.path, fix, tc.fix)
		}
	}
}
