// Command extranetd is the extranet gateway daemon. See `extranetd --help`.
package main

import (
	"os"
	"runtime"

	"github.com/extranetgw/extranet/internal/daemon"
)

func init() {
	// The main goroutine keeps the main thread, so no goroutine that
	// enters the gateway namespace ever runs on it. Go retires a thread
	// that ends locked into another namespace, but it cannot retire the
	// main one: /proc/PID/ns/net, and every tool that looks there, would
	// show the gateway namespace as the daemon's.
	runtime.LockOSThread()
}

func main() {
	os.Exit(daemon.Main(os.Args[1:]))
}
