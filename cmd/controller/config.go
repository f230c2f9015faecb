package main

import "github.com/iotfabric/iotfabric/pkg/server"

// The configuration and its defaults are pkg/server's.
type (
	Config     = server.Config
	PeerConfig = server.PeerConfig
)

const (
	DefaultDataDir       = server.DefaultDataDir
	DefaultAPIListen     = server.DefaultAPIListen
	DefaultMetricsListen = server.DefaultMetricsListen
	DefaultASN           = server.DefaultASN
)

func defaultConfig() Config { return server.DefaultConfig() }

func loadConfig(path string) (Config, error) { return server.LoadConfig(path) }
