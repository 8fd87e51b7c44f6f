package httpapi

import "time"

// SetBackupStall shortens how long a backup waits for a client that reads
// nothing, and returns the function that restores it.
func SetBackupStall(d time.Duration) func() {
	old := backupStall
	backupStall = d
	return func() { backupStall = old }
}
