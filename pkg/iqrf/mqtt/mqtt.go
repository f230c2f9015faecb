// Package mqtt publishes readings from the on-disk queue to an MQTT broker
// (QoS 1, acknowledged by the broker before the queue lets them go) and
// answers IQRF Gateway Daemon JSON API requests for the Standard Sensor
// (iqrfSensor_ReadSensorsWithTypes, iqrfSensor_Enumerate) so existing IQRF
// tools can talk to the collector.
package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotfabric/iotfabric/pkg/iqrf/collector"
	"github.com/iotfabric/iotfabric/pkg/iqrf/coord"
	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
	"github.com/iotfabric/iotfabric/pkg/iqrf/queue"
	"github.com/iotfabric/iotfabric/pkg/iqrf/sensor"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// Default topics of the IQRF Gateway Daemon's MQTT messaging.
const (
	DefaultRequestTopic  = "Iqrf/DpaRequest"
	DefaultResponseTopic = "Iqrf/DpaResponse"
	// InstanceID goes into the insId field of API responses.
	InstanceID = "iotfabric-iqrf-collector"
)

// Doer runs DPA transactions (the collector's current coordinator link).
type Doer interface {
	Do(ctx context.Context, req dpa.Frame, timeout time.Duration) (*coord.Result, error)
}

// Stats counts what the client did. Fields are updated atomically.
type Stats struct {
	// Sent counts readings published (handed to the broker connection),
	// resends included.
	Sent atomic.Uint64
	// Acknowledged counts readings the broker acknowledged (QoS 1 PUBACK),
	// each once: they leave the queue. A PUBACK says the broker accepted
	// the message; it says nothing of subscribers (with none, the broker
	// drops it).
	Acknowledged atomic.Uint64
	Errors       atomic.Uint64 // failed publishes and connections
	BadRecords   atomic.Uint64
	APIRequests  atomic.Uint64
	APIErrors    atomic.Uint64
	Connected    atomic.Bool
}

// Config configures the client.
type Config struct {
	// Broker is the broker URL, e.g. tcp://127.0.0.1:1883.
	Broker   string
	ClientID string
	// TopicPrefix starts reading topics: <prefix>/<node>/<metric>.
	TopicPrefix string
	Reader      *queue.Reader
	// Doer answers API requests; nil disables the API.
	Doer          Doer
	RequestTopic  string
	ResponseTopic string
	// Batch is the most readings published before waiting for the broker's
	// acknowledgements (default 100).
	Batch  int
	Logger *slog.Logger
	Stats  *Stats
}

// ReadingMessage is the JSON published for each reading.
type ReadingMessage struct {
	Node     uint8   `json:"node"`
	Sensor   int     `json:"sensorIndex"`
	Type     uint8   `json:"type"`
	Quantity string  `json:"quantity"`
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Value    float64 `json:"value"`
	Time     string  `json:"timestamp"`
	UnixTime int64   `json:"unixTime"`
}

// Message builds the JSON message of a reading.
func Message(r collector.Reading) ReadingMessage {
	m := ReadingMessage{Node: r.Node, Sensor: r.Index, Type: r.Type, Quantity: r.Metric, Value: r.Value,
		Time: r.Time.UTC().Format(time.RFC3339Nano), UnixTime: r.Time.Unix()}
	if q := sensor.Lookup(r.Type); q != nil {
		m.Name, m.Unit = q.Name, q.Unit
	}
	return m
}

// Topic is where a reading is published.
func Topic(prefix string, r collector.Reading) string {
	return prefix + "/" + strconv.Itoa(int(r.Node)) + "/" + r.Metric
}

// Run connects, publishes the queue and serves the API until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.RequestTopic == "" {
		cfg.RequestTopic = DefaultRequestTopic
	}
	if cfg.ResponseTopic == "" {
		cfg.ResponseTopic = DefaultResponseTopic
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "iotfabric-iqrf-collector"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = &Stats{}
	}
	log := cfg.Logger
	api := make(chan paho.Message, 16)
	connected := make(chan struct{}, 1)
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(500 * time.Millisecond).SetMaxReconnectInterval(5 * time.Second).
		SetConnectTimeout(3 * time.Second).SetOrderMatters(false).
		SetOnConnectHandler(func(c paho.Client) {
			cfg.Stats.Connected.Store(true)
			log.Info("connected to the MQTT broker", logkey.Broker, cfg.Broker)
			select {
			case connected <- struct{}{}:
			default:
			}
			if cfg.Doer == nil {
				return
			}
			c.Subscribe(cfg.RequestTopic, 1, func(_ paho.Client, m paho.Message) {
				select {
				case api <- m:
				default:
					cfg.Stats.APIErrors.Add(1)
					log.Warn("API request dropped: too many pending")
				}
			})
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			cfg.Stats.Connected.Store(false)
			cfg.Stats.Errors.Add(1)
			log.Warn("MQTT connection lost", logkey.Err, err)
		})
	client := paho.NewClient(opts)
	client.Connect()
	defer client.Disconnect(250)
	apiDone := make(chan struct{})
	go func() {
		defer close(apiDone)
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-api:
				cfg.Stats.APIRequests.Add(1)
				resp := HandleRequest(ctx, cfg.Doer, m.Payload())
				if resp == nil {
					cfg.Stats.APIErrors.Add(1)
					continue
				}
				tok := client.Publish(cfg.ResponseTopic, 1, false, resp)
				if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					cfg.Stats.APIErrors.Add(1)
					log.Warn("cannot publish an API response", logkey.Err, tok.Error())
				}
			}
		}
	}()
	defer func() { <-apiDone }()
	publish(ctx, client, connected, &cfg)
	return nil
}

// publish delivers the queue: a batch is acknowledged in the queue only
// when the broker acknowledged every message of it.
func publish(ctx context.Context, client paho.Client, connected <-chan struct{}, cfg *Config) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		// Publish only on an open connection: messages handed to the client
		// while it is disconnected would wait in its memory store, which a
		// clean-session reconnect empties.
		for !client.IsConnectionOpen() {
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-connected:
			case <-t.C:
			}
			t.Stop()
		}
		recs, first, err := cfg.Reader.Next(ctx, cfg.Batch)
		if err != nil {
			return
		}
		toks := make([]paho.Token, 0, len(recs))
		for _, rec := range recs {
			r, err := collector.DecodeRecord(rec)
			if err != nil {
				cfg.Stats.BadRecords.Add(1)
				continue
			}
			body, _ := json.Marshal(Message(r))
			toks = append(toks, client.Publish(Topic(cfg.TopicPrefix, r), 1, false, body))
			cfg.Stats.Sent.Add(1)
		}
		var failed error
		for _, tok := range toks {
			if !tok.WaitTimeout(10 * time.Second) {
				failed = errors.New("no acknowledgement from the broker")
			} else if err := tok.Error(); err != nil {
				failed = err
			}
		}
		if failed != nil {
			cfg.Stats.Errors.Add(1)
			cfg.Logger.Warn("MQTT publish failed; will resend", logkey.Err, failed, logkey.RetryIn, backoff)
			cfg.Reader.Rewind()
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 200 * time.Millisecond
		// Counted first, as the Graphite sink does.
		cfg.Stats.Acknowledged.Add(uint64(len(toks)))
		cfg.Reader.Ack(first + uint64(len(recs)))
	}
}

// Request is the envelope of a Daemon API request.
type Request struct {
	MType string `json:"mType"`
	Data  struct {
		MsgID   string `json:"msgId"`
		Timeout int    `json:"timeout"`
		Req     struct {
			NAdr  *int `json:"nAdr"`
			HwpID *int `json:"hwpId"`
			Param struct {
				SensorIndexes json.RawMessage `json:"sensorIndexes"`
			} `json:"param"`
		} `json:"req"`
		ReturnVerbose bool `json:"returnVerbose"`
	} `json:"data"`
}

// Raw is one transaction in a verbose response.
type Raw struct {
	Request        string `json:"request"`
	RequestTs      string `json:"requestTs"`
	Confirmation   string `json:"confirmation"`
	ConfirmationTs string `json:"confirmationTs"`
	Response       string `json:"response"`
	ResponseTs     string `json:"responseTs"`
}

// Response is the envelope of a Daemon API response.
type Response struct {
	MType string       `json:"mType"`
	Data  ResponseData `json:"data"`
}

// ResponseData is the data of a Response.
type ResponseData struct {
	MsgID     string `json:"msgId"`
	Rsp       *Rsp   `json:"rsp,omitempty"`
	Raw       []Raw  `json:"raw,omitempty"`
	InsID     string `json:"insId"`
	Status    int    `json:"status"`
	StatusStr string `json:"statusStr"`
}

// Rsp is the decoded part of a response.
type Rsp struct {
	NAdr   int `json:"nAdr"`
	HwpID  int `json:"hwpId"`
	RCode  int `json:"rCode"`
	DpaVal int `json:"dpaVal"`
	Result any `json:"result,omitempty"`
}

// SensorJSON is one sensor in a result.
type SensorJSON struct {
	ID            string   `json:"id"`
	Type          int      `json:"type"`
	Name          string   `json:"name"`
	ShortName     string   `json:"shortName"`
	Value         *float64 `json:"value"`
	Unit          string   `json:"unit"`
	DecimalPlaces int      `json:"decimalPlaces"`
}

// EnumSensorJSON is one sensor in an Enumerate result.
type EnumSensorJSON struct {
	ID        string `json:"id"`
	Type      int    `json:"type"`
	Name      string `json:"name"`
	ShortName string `json:"shortName"`
	Unit      string `json:"unit"`
	FRCs      []int  `json:"frcs"`
}

// Transaction status codes of the Daemon (IDpaTransactionResult2.h).
const (
	statusOK         = 0
	statusTimeout    = -1
	statusIface      = -4
	statusBadRequest = -6
	statusBadResp    = -7
)

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format("2006-01-02T15:04:05.000-07:00")
}

// HandleRequest answers one API request (JSON in, JSON out). It returns nil
// for input that is not a request envelope at all.
func HandleRequest(ctx context.Context, d Doer, body []byte) []byte {
	var req Request
	if err := json.Unmarshal(body, &req); err != nil || req.MType == "" {
		return nil
	}
	resp := Response{MType: req.MType, Data: ResponseData{MsgID: req.Data.MsgID, InsID: InstanceID}}
	fail := func(status int, msg string) []byte {
		resp.Data.Status, resp.Data.StatusStr = status, msg
		b, _ := json.Marshal(resp)
		return b
	}
	if req.MType != "iqrfSensor_ReadSensorsWithTypes" && req.MType != "iqrfSensor_Enumerate" {
		return fail(statusBadRequest, "unsupported mType "+req.MType)
	}
	if req.Data.Req.NAdr == nil || *req.Data.Req.NAdr < 0 || *req.Data.Req.NAdr > dpa.AddrMaxNode {
		return fail(statusBadRequest, "req.nAdr must be a node address 0-239")
	}
	hwpid := dpa.HWPIDDoNotCheck
	if h := req.Data.Req.HwpID; h != nil {
		if *h < 0 || *h > 0xFFFF {
			return fail(statusBadRequest, "req.hwpId out of range")
		}
		hwpid = *h
	}
	f := dpa.Frame{NADR: uint16(*req.Data.Req.NAdr), PNUM: dpa.PNUMStdSensor, HWPID: uint16(hwpid)}
	bitmap := uint32(1) // no PData: sensor 0 only
	var indexes []int
	if req.MType == "iqrfSensor_Enumerate" {
		f.PCMD = sensor.CmdEnumerate
	} else {
		f.PCMD = sensor.CmdReadSensorsWithTypes
		if raw := req.Data.Req.Param.SensorIndexes; len(raw) > 0 && string(raw) != "null" {
			var all int
			if err := json.Unmarshal(raw, &all); err == nil {
				if all != -1 {
					return fail(statusBadRequest, "sensorIndexes must be -1 or an array")
				}
				bitmap = sensor.ReadAll
			} else if err := json.Unmarshal(raw, &indexes); err == nil {
				for _, i := range indexes {
					if i < 0 || i > 31 {
						return fail(statusBadRequest, "sensor index out of 0-31")
					}
				}
				bitmap = collector.ReadBitmap(indexes)
			} else {
				return fail(statusBadRequest, "sensorIndexes must be -1 or an array")
			}
			f.PData = sensor.ReadRequest(bitmap)
		}
	}
	timeout := time.Duration(0)
	if req.Data.Timeout > 0 {
		timeout = time.Duration(req.Data.Timeout) * time.Millisecond
	}
	res, err := d.Do(ctx, f, timeout)
	if res != nil && req.Data.ReturnVerbose {
		raw := Raw{Request: dpa.DottedHex(res.Request), RequestTs: ts(res.RequestTime),
			Response: dpa.DottedHex(res.Response), ResponseTs: ts(res.ResponseTime)}
		if res.Confirmation != nil {
			raw.Confirmation, raw.ConfirmationTs = dpa.DottedHex(res.Confirmation), ts(res.ConfirmTime)
		}
		resp.Data.Raw = []Raw{raw}
	}
	if res != nil {
		resp.Data.Rsp = &Rsp{NAdr: int(res.Frame.NADR), HwpID: int(res.Frame.HWPID), RCode: int(res.Frame.ErrN), DpaVal: int(res.Frame.DpaValue)}
	}
	var code dpa.ResponseCode
	switch {
	case errors.As(err, &code):
		return fail(int(code), code.Name())
	case errors.Is(err, coord.ErrTimeout):
		return fail(statusTimeout, "ERROR_TIMEOUT")
	case err != nil:
		return fail(statusIface, "ERROR_IFACE: "+err.Error())
	}
	if f.PCMD == sensor.CmdEnumerate {
		types, err := sensor.ParseEnumerate(res.Frame.PData)
		if err != nil {
			return fail(statusBadResp, "BAD_RESPONSE: "+err.Error())
		}
		out := []EnumSensorJSON{}
		for _, t := range types {
			s := EnumSensorJSON{Type: int(t), FRCs: []int{}}
			if q := sensor.Lookup(t); q != nil {
				s.ID, s.Name, s.ShortName, s.Unit = q.ID, q.Name, q.ShortName, q.Unit
				for _, c := range q.FRCs {
					s.FRCs = append(s.FRCs, int(c))
				}
			}
			out = append(out, s)
		}
		resp.Data.Rsp.Result = map[string]any{"sensors": out}
	} else {
		vals, err := sensor.AppendReadWithTypes(nil, res.Frame.PData, bitmap)
		if err != nil {
			return fail(statusBadResp, "BAD_RESPONSE: "+err.Error())
		}
		out := make([]SensorJSON, 0, len(vals))
		idx := make([]int, 0, len(vals))
		for _, v := range vals {
			s := SensorJSON{Type: int(v.Type)}
			if q := v.Quantity; q != nil {
				s.ID, s.Name, s.ShortName, s.Unit = q.ID, q.Name, q.ShortName, q.Unit
				s.DecimalPlaces = q.DecimalPlaces
			}
			if v.Valid && !math.IsNaN(v.Value) {
				val := v.Value
				s.Value = &val
			}
			out = append(out, s)
			idx = append(idx, v.Index)
		}
		result := map[string]any{"sensors": out}
		if bitmap == sensor.ReadAll {
			result["sensorIndexes"] = -1
		} else {
			result["sensorIndexes"] = idx
		}
		resp.Data.Rsp.Result = result
	}
	resp.Data.Status, resp.Data.StatusStr = statusOK, "ok"
	b, _ := json.Marshal(resp)
	return b
}

// TopicPrefixFrom turns a Graphite prefix ("iotfabric.site1") into a topic
// prefix ("iotfabric/site1").
func TopicPrefixFrom(graphitePrefix string) string {
	return strings.ReplaceAll(strings.Trim(graphitePrefix, "."), ".", "/")
}
