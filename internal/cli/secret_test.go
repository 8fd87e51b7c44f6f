package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOutRefusesFilesOthersCanRead: as root, --out into a shared directory
// must not write a private key into a file another user planted (owned by
// them, or a symlink to anywhere, or a hard link), whatever mode it gets.
func TestOutRefusesFilesOthersCanRead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to plant a file owned by another user")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o1777)
	planted := filepath.Join(dir, "planted.conf")
	if err := os.WriteFile(planted, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(planted, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("untouched"), 0o600)
	link := filepath.Join(dir, "link.conf")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard.conf")
	if err := os.Link(victim, hard); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{planted, link, hard} {
		if sf, err := openSecretFile(path); err == nil {
			sf.write([]byte("PrivateKey = SECRET\n"))
			t.Errorf("%s was opened for a secret", path)
		}
		if err := writeSecret(path, []byte("PrivateKey = SECRET\n")); err == nil {
			t.Errorf("writeSecret wrote %s", path)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Errorf("the symlink's target now holds %q", b)
	}
	if b, _ := os.ReadFile(planted); len(b) != 0 {
		t.Errorf("the planted file now holds %q", b)
	}
	// The caller's own file is still replaced.
	own := filepath.Join(dir, "own.conf")
	os.WriteFile(own, []byte("old"), 0o644)
	if err := writeSecret(own, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(own); fi.Mode().Perm() != 0o600 {
		t.Errorf("own file mode %v, want 0600", fi.Mode().Perm())
	}
}
