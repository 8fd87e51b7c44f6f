package wgconfig

import (
	"fmt"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// wg-quick and the Android app name the tunnel after the config file,
// NAME.conf, and refuse a file whose NAME is not 1 to 15 of these
// characters (15 is Linux's limit on an interface name).
const (
	fileSuffix     = ".conf"
	maxTunnelName  = 15
	tunnelNameRune = "_=+.-"
)

func tunnelRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(tunnelNameRune, r)
}

// CheckFileName says why a config saved at path would not import as a
// tunnel into wg-quick or the Android app. Only the file's name counts,
// not its directory.
func CheckFileName(path string) error {
	base := filepath.Base(path)
	name, ok := strings.CutSuffix(base, fileSuffix)
	switch {
	case !ok:
		return fmt.Errorf("%q does not end in .conf, and wg-quick and the WireGuard apps import only NAME.conf files", base)
	case name == "":
		return fmt.Errorf("%q has an empty tunnel name before .conf", base)
	}
	for _, r := range name {
		if !tunnelRune(r) {
			return fmt.Errorf("tunnel name %q (the file name without .conf) has %q; wg-quick and the Android app accept only letters, digits and %q", name, string(r), tunnelNameRune)
		}
	}
	if n := utf8.RuneCountInString(name); n > maxTunnelName {
		return fmt.Errorf("tunnel name %q (the file name without .conf) is %d characters long; wg-quick and the Android app accept at most %d", name, n, maxTunnelName)
	}
	return nil
}

// SuggestFileName returns a name close to path's, in the same directory,
// that CheckFileName accepts: other characters become '-', and the tunnel
// name is cut to its first 15 characters.
func SuggestFileName(path string) string {
	base := filepath.Base(path)
	name, ok := strings.CutSuffix(base, fileSuffix)
	if !ok {
		name = strings.TrimSuffix(base, filepath.Ext(base))
	}
	var b strings.Builder
	for _, r := range name {
		if b.Len() == maxTunnelName {
			break
		}
		if !tunnelRune(r) {
			r = '-'
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		b.WriteString("tunnel")
	}
	return filepath.Join(filepath.Dir(path), b.String()+fileSuffix)
}
