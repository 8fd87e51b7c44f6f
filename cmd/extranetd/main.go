// Command extranetd is the extranet gateway daemon. See `extranetd --help`.
package main

import (
	"os"

	"github.com/extranetgw/extranet/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:]))
}
