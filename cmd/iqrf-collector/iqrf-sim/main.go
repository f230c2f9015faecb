// Command iqrf-sim is a simulated IQRF coordinator for demonstrations and
// tests of iqrf-collector: it makes a pseudo-terminal pair and answers on
// it, with the UART (or USB CDC) framing, for three bonded nodes built from
// the DPA reference's test vectors.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
)

func main() {
	link := flag.String("link", "", "also make a symlink at `PATH` to the serial device")
	useCDC := flag.Bool("cdc", false, "speak the USB CDC protocol instead of the UART framing")
	vary := flag.Bool("vary", true, "raise node 2's temperature by 1/16 °C on every read, so each reading is distinct")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	pty, err := iqrftest.OpenPTY()
	if err != nil {
		fmt.Fprintln(os.Stderr, "iqrf-sim:", err)
		os.Exit(1)
	}
	defer pty.Close()
	if *link != "" {
		os.Remove(*link)
		if err := os.Symlink(pty.SlavePath, *link); err != nil {
			fmt.Fprintln(os.Stderr, "iqrf-sim:", err)
			os.Exit(1)
		}
		defer os.Remove(*link)
	}
	sim := iqrftest.NewSim(iqrftest.ReferenceNodes()...)
	sim.Logger = log
	if *useCDC {
		sim.Framing = iqrftest.CDC
	}
	if *vary {
		sim.BeforeRead = func(n *iqrftest.Node) {
			if n.Addr == 2 {
				binary.LittleEndian.PutUint16(n.Sensors[0].Raw, uint16(0x01c8+n.Reads%256))
			}
		}
	}
	fmt.Printf("iqrf-sim: coordinator on %s\n", pty.SlavePath)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := sim.Serve(ctx, pty.Master, true); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "iqrf-sim:", err)
		os.Exit(1)
	}
}
