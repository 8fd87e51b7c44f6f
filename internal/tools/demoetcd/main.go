// Command demoetcd runs a single-member etcd for scripts/demo-cluster.sh,
// inside the demo's own network namespace, so that the demo needs no etcd
// package: the same embedded etcd the tests run. It prints its client URL
// once it serves, and stops on SIGTERM or SIGINT. Not for production: one
// member, plain HTTP, its data in a directory of the demo's.
//
//	demoetcd DIR HOST
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/extranetgw/extranet/internal/cluster/etcdtest"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: demoetcd DIR HOST")
		os.Exit(2)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	s, err := etcdtest.Start(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "demoetcd:", err)
		os.Exit(1)
	}
	fmt.Println(s.URL)
	<-stop
	s.Stop()
}
