// Command extranetctl manages the extranet gateway. See `extranetctl --help`.
package main

import (
	"os"

	"github.com/extranetgw/extranet/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.DefaultEnv()))
}
