// Command mangen writes the manual pages of iotfabric's binaries from their
// own --help output (internal/manpage): make deb runs it on the binaries it
// packages.
//
//	go run ./internal/manpage/mangen -bin DIR -out DIR -version V -date YYYY-MM-DD
//
// DIR holds the binaries (controller, iotfabricctl, vrouter-agent,
// cni-plugin, iqrf-collector), built for this machine; the pages are written
// as OUT/NAME.SECTION.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/iotfabric/iotfabric/internal/manpage"
)

func main() {
	bin := flag.String("bin", "bin", "directory of the binaries")
	out := flag.String("out", "man", "directory to write the pages to")
	version := flag.String("version", "dev", "iotfabric version for the pages' header")
	date := flag.String("date", "", "date for the pages' header (YYYY-MM-DD)")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
	for _, c := range manpage.Commands {
		p, err := manpage.FromBinary(c, filepath.Join(*bin, c.Binary), "iotfabric "+*version, *date)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mangen:", err)
			os.Exit(1)
		}
		f := filepath.Join(*out, c.Name+"."+c.Section)
		if err := os.WriteFile(f, p.Roff(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "mangen:", err)
			os.Exit(1)
		}
		fmt.Println(f)
	}
}
