package gobgp

import (
	"context"
	"log/slog"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logger forwards GoBGP's log lines to an injected slog.Logger.
type logger struct{ l *slog.Logger }

func newLogger(l *slog.Logger) gobgplog.Logger {
	return &logger{l: l.With(logkey.Library, "gobgp")}
}

func (g *logger) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	if !g.l.Enabled(context.Background(), level) {
		return
	}
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		args = append(args, k, v)
	}
	g.l.Log(context.Background(), level, msg, args...)
}

// Panic and Fatal are logged as errors: a library never ends the process.
func (g *logger) Panic(msg string, f gobgplog.Fields) { g.emit(slog.LevelError, msg, f) }
func (g *logger) Fatal(msg string, f gobgplog.Fields) { g.emit(slog.LevelError, msg, f) }
func (g *logger) Error(msg string, f gobgplog.Fields) { g.emit(slog.LevelError, msg, f) }
func (g *logger) Warn(msg string, f gobgplog.Fields)  { g.emit(slog.LevelWarn, msg, f) }
func (g *logger) Info(msg string, f gobgplog.Fields)  { g.emit(slog.LevelDebug, msg, f) }
func (g *logger) Debug(msg string, f gobgplog.Fields) { g.emit(slog.LevelDebug-4, msg, f) }

func (g *logger) SetLevel(gobgplog.LogLevel) {}

func (g *logger) GetLevel() gobgplog.LogLevel {
	if g.l.Enabled(context.Background(), slog.LevelDebug-4) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
