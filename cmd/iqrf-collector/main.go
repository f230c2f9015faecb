// Command iqrf-collector reads IQRF mesh sensors through the network's
// coordinator (UART, USB CDC or SPI) and carries the readings to Graphite
// and MQTT through an on-disk store-and-forward queue.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/iotfabric/iotfabric/internal/buildinfo"
	"github.com/iotfabric/iotfabric/internal/logbound"
	"github.com/iotfabric/iotfabric/pkg/iqrf/cdc"
	"github.com/iotfabric/iotfabric/pkg/iqrf/collector"
	"github.com/iotfabric/iotfabric/pkg/iqrf/coord"
	"github.com/iotfabric/iotfabric/pkg/iqrf/graphite"
	"github.com/iotfabric/iotfabric/pkg/iqrf/mqtt"
	"github.com/iotfabric/iotfabric/pkg/iqrf/queue"
	"github.com/iotfabric/iotfabric/pkg/iqrf/spi"
	"github.com/iotfabric/iotfabric/pkg/iqrf/uart"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

type options struct {
	serial, cdc, spi string
	baud             int
	interval         time.Duration
	graphite         string
	graphiteConfirm  time.Duration
	mqtt             string
	mqttTopic        string
	mqttClientID     string
	api              bool
	prefix           string
	bufferDir        string
	bufferSize       byteSize
	bufferSync       bool
	poll             string
	metrics          string
	logLevel         string
	retries          int
	version          bool
}

const usageHead = `Usage: iqrf-collector (--serial DEV | --cdc DEV | --spi DEV) (--graphite HOST:PORT | --mqtt URL | both) [flags]

Reads the IQRF Standard Sensor nodes of a mesh through its coordinator and
carries every reading to Graphite (carbon plaintext) and MQTT through an
on-disk store-and-forward queue. See docs/iqrf.md.

Flags:
`

// newFlagSet defines every flag of the command into o.
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("iqrf-collector", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	// Coordinator link: exactly one of --serial, --cdc, --spi.
	fs.StringVar(&o.serial, "serial", "", "coordinator on a UART `device`, e.g. /dev/ttyS0 (8N1, no flow control); one of --serial, --cdc, --spi")
	fs.IntVar(&o.baud, "baud", uart.DefaultBaud, "UART baud `rate` for --serial")
	fs.StringVar(&o.cdc, "cdc", "", "coordinator in a GW-USB / CK-USB `device` with the USB CDC firmware, e.g. /dev/ttyACM0")
	fs.StringVar(&o.spi, "spi", "", "coordinator on an SPI `device` (spidev, mode 0, 250 kHz), e.g. /dev/spidev0.0")
	fs.IntVar(&o.retries, "retries", 2, "`number` of retries of a DPA request after a timeout")
	// Polling.
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "time between poll rounds")
	fs.StringVar(&o.poll, "poll", "read", "poll `mode`: read = Read Sensors With Types node by node; frc = one sensor FRC per sensor type across all nodes")
	// Sinks: --graphite, --mqtt or both.
	fs.StringVar(&o.graphite, "graphite", "", "carbon plaintext receiver `HOST:PORT`")
	fs.DurationVar(&o.graphiteConfirm, "graphite-confirm", 2*time.Second, "how long the carbon connection must stay up after carbon's TCP stack acknowledged a batch before the batch leaves the queue")
	fs.StringVar(&o.prefix, "prefix", "iotfabric.iqrf", "metric path `prefix` of the Graphite lines, e.g. iotfabric.<site>")
	fs.StringVar(&o.mqtt, "mqtt", "", "MQTT broker `URL`, e.g. tcp://HOST:1883")
	fs.StringVar(&o.mqttTopic, "mqtt-topic", "", "topic `prefix` for readings, published on <prefix>/<node>/<quantity> (default: --prefix with dots as slashes)")
	fs.StringVar(&o.mqttClientID, "mqtt-client-id", "iotfabric-iqrf-collector", "MQTT client `identifier`; give each collector on a broker its own (the broker disconnects an older client with the same one)")
	fs.BoolVar(&o.api, "mqtt-api", true, "answer IQRF Gateway Daemon JSON API requests (iqrfSensor_*) on Iqrf/DpaRequest with Iqrf/DpaResponse")
	// Store and forward.
	fs.StringVar(&o.bufferDir, "buffer-dir", "/var/lib/iotfabric/iqrf-collector", "`directory` of the store-and-forward queue (keep it on a persistent volume)")
	o.bufferSize = 100 << 20
	fs.Var(&o.bufferSize, "buffer-size", "bound of the queue: bytes, or a `size` with a unit (K/KiB, M/MiB, G/GiB = powers of 1024; KB, MB, GB = powers of 1000), e.g. 100MB, 64MiB, 1G; the oldest readings are dropped first")
	fs.BoolVar(&o.bufferSync, "buffer-sync", false, "fsync every append to the queue (survives power loss, not only a crash)")
	// Operation.
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on http://`ADDR`/metrics, e.g. 127.0.0.1:9110")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.BoolVar(&o.version, "version", false, "print the version, commit, build date, Go version and platform, then exit")
	return fs
}

// parseFlags reads and checks the command line (nothing but the flags' syntax
// with --version). For --help it writes the
// usage to helpOut and returns flag.ErrHelp.
func parseFlags(args []string, helpOut io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o)
	fs.SetOutput(io.Discard) // errors are returned, printed once by main
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(helpOut)
			fs.Usage()
		}
		return nil, err
	}
	if o.version {
		return o, nil
	}
	n := 0
	for _, d := range []string{o.serial, o.cdc, o.spi} {
		if d != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("give exactly one of --serial, --cdc or --spi")
	}
	if o.graphite == "" && o.mqtt == "" {
		return nil, errors.New("give --graphite, --mqtt or both")
	}
	if o.interval <= 0 {
		return nil, errors.New("--interval must be positive")
	}
	if o.graphite != "" {
		if _, _, err := net.SplitHostPort(o.graphite); err != nil {
			return nil, fmt.Errorf("--graphite: %w", err)
		}
	}
	if o.mqttTopic == "" {
		o.mqttTopic = mqtt.TopicPrefixFrom(o.prefix)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "iqrf-collector:", err)
		fmt.Fprintln(os.Stderr, "Run iqrf-collector --help for the flags.")
		os.Exit(2)
	}
	if o.version {
		fmt.Println(buildinfo.Get("iqrf-collector"))
		return
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "iqrf-collector: --log-level:", err)
		os.Exit(2)
	}
	// Bounded: a noisy serial line's bad frames (and any other repeated
	// warning) are summarised per interval with their count and first
	// reasons; long values are cut.
	log := slog.New(logbound.NewHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}), logbound.Options{}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("iqrf-collector stopped", logkey.Err, err)
		os.Exit(1)
	}
}

func opener(o *options) func() (coord.Link, error) {
	switch {
	case o.serial != "":
		return func() (coord.Link, error) { return uart.Open(o.serial, o.baud) }
	case o.cdc != "":
		return func() (coord.Link, error) { return cdc.Open(o.cdc) }
	}
	return func() (coord.Link, error) { return spi.Open(o.spi) }
}

func run(ctx context.Context, o *options, log *slog.Logger) error {
	mode, err := collector.ParsePollMode(o.poll)
	if err != nil {
		return err
	}
	var readers []string
	if o.graphite != "" {
		readers = append(readers, "graphite")
	}
	if o.mqtt != "" {
		readers = append(readers, "mqtt")
	}
	q, err := queue.Open(filepath.Clean(o.bufferDir), queue.Options{MaxBytes: int64(o.bufferSize), Sync: o.bufferSync}, readers...)
	if err != nil {
		return err
	}
	defer q.Close()
	col := collector.New(collector.Config{
		Open:     opener(o),
		Interval: o.interval,
		Mode:     mode,
		Deliver: func(rs []collector.Reading) error {
			recs := make([][]byte, len(rs))
			for i, r := range rs {
				recs[i] = r.AppendRecord(nil)
			}
			return q.Append(recs...)
		},
		Coord:  coord.Config{Retries: o.retries},
		Logger: log.With(logkey.Component, logkey.ComponentCollector),
	})
	gstats, mstats := &graphite.Stats{}, &mqtt.Stats{}
	var wg sync.WaitGroup
	if o.graphite != "" {
		wg.Go(func() {
			graphite.Run(ctx, graphite.Config{Addr: o.graphite, Prefix: o.prefix, Reader: q.Reader("graphite"),
				ConfirmAfter: o.graphiteConfirm, Logger: log.With(logkey.Component, logkey.ComponentGraphite), Stats: gstats})
		})
	}
	if o.mqtt != "" {
		var doer mqtt.Doer
		if o.api {
			doer = col
		}
		wg.Go(func() {
			mqtt.Run(ctx, mqtt.Config{Broker: o.mqtt, ClientID: o.mqttClientID, TopicPrefix: o.mqttTopic,
				Reader: q.Reader("mqtt"), Doer: doer, Logger: log.With(logkey.Component, logkey.ComponentMQTT), Stats: mstats})
		})
	}
	if o.metrics != "" {
		l, err := net.Listen("tcp", o.metrics)
		if err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		log.Info("serving metrics", logkey.Addr, l.Addr().String())
		srv := &http.Server{Handler: metricsHandler(col, q, gstats, mstats), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
	}
	log.Info("iqrf-collector started", logkey.Poll, o.poll, logkey.Interval, o.interval, logkey.Graphite, o.graphite, logkey.MQTT, o.mqtt, logkey.Buffer, o.bufferDir)
	err = col.Run(ctx)
	wg.Wait()
	return err
}
