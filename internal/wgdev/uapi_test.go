package wgdev

import (
	"errors"
	"strings"
	"testing"
)

// TestUAPIInUseNamesInterface: wireguard-go's control sockets live in one
// directory for every network namespace, so a second daemon with the same
// interface name fails on it; the error says to choose --interface.
func TestUAPIInUseNamesInterface(t *testing.T) {
	err := uapiOpenError("wg-extranet", errors.New("unix socket in use"))
	for _, want := range []string{"/var/run/wireguard/wg-extranet.sock", "unix socket in use", "--interface"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	other := errors.New("permission denied")
	if err := uapiOpenError("wg0", other); !errors.Is(err, other) || strings.Contains(err.Error(), "--interface") {
		t.Errorf("error %q for another failure: want it wrapped, without the --interface advice", err)
	}
}
