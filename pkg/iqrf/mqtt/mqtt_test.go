package mqtt

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotfabric/iotfabric/pkg/iqrf/collector"
	"github.com/iotfabric/iotfabric/pkg/iqrf/coord"
	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
	"github.com/iotfabric/iotfabric/pkg/iqrf/queue"
	"github.com/iotfabric/iotfabric/pkg/iqrf/uart"
)

func logger() *slog.Logger { return slog.New(slog.NewTextHandler(os.Stderr, nil)) }

// startCollector runs the collector against the simulated reference network
// and stores its readings in q.
func startCollector(t *testing.T, q *queue.Queue) *collector.Collector {
	t.Helper()
	sim := iqrftest.NewSim(iqrftest.ReferenceNodes()...)
	pty, err := iqrftest.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	simDone, colDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(simDone); sim.Serve(ctx, pty.Master, true) }()
	col := collector.New(collector.Config{
		Open:     func() (coord.Link, error) { return uart.Open(pty.SlavePath, 57600) },
		Interval: 300 * time.Millisecond,
		Logger:   logger(),
		Deliver: func(rs []collector.Reading) error {
			var recs [][]byte
			for _, r := range rs {
				recs = append(recs, r.AppendRecord(nil))
			}
			return q.Append(recs...)
		},
	})
	go func() { defer close(colDone); col.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-colDone; pty.Close(); <-simDone })
	return col
}

func subscribe(t *testing.T, broker, topic string) <-chan paho.Message {
	t.Helper()
	ch := make(chan paho.Message, 1000)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("test-" + strings.NewReplacer("/", "-", "#", "all").Replace(topic)))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { ch <- m }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return ch
}

func TestReadingsAndJSONAPIThroughMosquitto(t *testing.T) {
	broker := iqrftest.StartMosquitto(t)
	q, err := queue.Open(filepath.Join(t.TempDir(), "q"), queue.Options{}, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	readings := subscribe(t, broker.URL(), "site1/#")
	responses := subscribe(t, broker.URL(), DefaultResponseTopic)
	col := startCollector(t, q)
	stats := &Stats{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Broker: broker.URL(), TopicPrefix: "site1", Reader: q.Reader("mqtt"), Doer: col, Logger: logger(), Stats: stats})
	}()
	defer func() { cancel(); <-done }()

	// Readings arrive as JSON on <prefix>/<node>/<metric>.
	seen := map[string]ReadingMessage{}
	deadline := time.After(20 * time.Second)
	for len(seen) < 20 {
		select {
		case m := <-readings:
			var rm ReadingMessage
			if err := json.Unmarshal(m.Payload(), &rm); err != nil {
				t.Fatalf("%s: %v", m.Topic(), err)
			}
			seen[m.Topic()] = rm
		case <-deadline:
			t.Fatalf("only %d topics: %v; published %d errors %d pending %d", len(seen), seen, stats.Acknowledged.Load(), stats.Errors.Load(), q.Reader("mqtt").Pending())
		}
	}
	if m := seen["site1/2/temperature"]; m.Value != 28.5 || m.Unit != "°C" || m.Node != 2 || m.UnixTime == 0 {
		t.Errorf("site1/2/temperature: %+v", m)
	}
	if m := seen["site1/1/acceleration_7"]; m.Value != -0.03515625 {
		t.Errorf("site1/1/acceleration_7: %+v", m)
	}

	// The JSON API, as an IQRF tool would use it.
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("iqrf-tool"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	ask := func(req string) Response {
		t.Helper()
		var id struct {
			Data struct {
				MsgID string `json:"msgId"`
			} `json:"data"`
		}
		json.Unmarshal([]byte(req), &id)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			c.Publish(DefaultRequestTopic, 1, false, req).Wait()
			timer := time.After(3 * time.Second)
		wait:
			for {
				select {
				case m := <-responses:
					var resp Response
					if err := json.Unmarshal(m.Payload(), &resp); err != nil {
						t.Fatalf("response %s: %v", m.Payload(), err)
					}
					if resp.Data.MsgID == id.Data.MsgID {
						return resp
					}
				case <-timer:
					break wait // the API may not be subscribed yet: ask again
				}
			}
		}
		t.Fatalf("no response to %s", req)
		return Response{}
	}
	resp := ask(`{"mType":"iqrfSensor_ReadSensorsWithTypes","data":{"msgId":"testEmbedSensor","req":{"nAdr":2,"param":{"sensorIndexes":[0,1]}},"returnVerbose":true}}`)
	if resp.Data.Status != 0 || resp.Data.StatusStr != "ok" || resp.Data.Rsp == nil || resp.Data.Rsp.HwpID != 5122 {
		t.Fatalf("response %+v", resp)
	}
	res, _ := json.Marshal(resp.Data.Rsp.Result)
	var result struct {
		Sensors []SensorJSON `json:"sensors"`
		Indexes []int        `json:"sensorIndexes"`
	}
	json.Unmarshal(res, &result)
	if len(result.Sensors) != 2 || *result.Sensors[0].Value != 28.5 || result.Sensors[0].ID != "TEMPERATURE" ||
		*result.Sensors[1].Value != 2439 || result.Sensors[1].Unit != "ppm" || len(result.Indexes) != 2 {
		t.Errorf("result %s", res)
	}
	if len(resp.Data.Raw) != 1 || resp.Data.Raw[0].Request != "02.00.5e.01.ff.ff.03.00.00.00" ||
		!strings.HasPrefix(resp.Data.Raw[0].Confirmation, "02.00.5e.01.ff.ff.ff") || resp.Data.Raw[0].Response != "02.00.5e.81.02.14.00.40.01.c8.01.02.87.09" {
		t.Errorf("raw %+v", resp.Data.Raw)
	}
	// All sensors of node 1: index 4 is not available, so its value is null.
	resp = ask(`{"mType":"iqrfSensor_ReadSensorsWithTypes","data":{"msgId":"all","req":{"nAdr":1,"param":{"sensorIndexes":-1}}}}`)
	res, _ = json.Marshal(resp.Data.Rsp.Result)
	result.Sensors = nil
	json.Unmarshal(res, &result)
	if len(result.Sensors) != 15 || result.Sensors[4].Type != 160 || result.Sensors[4].Value != nil ||
		result.Sensors[12].Value == nil || *result.Sensors[12].Value != 21.625 || !strings.Contains(string(res), `"value":null`) {
		t.Errorf("all sensors: %s", res)
	}
	resp = ask(`{"mType":"iqrfSensor_Enumerate","data":{"msgId":"enum","req":{"nAdr":1,"param":{}}}}`)
	res, _ = json.Marshal(resp.Data.Rsp.Result)
	var enum struct {
		Sensors []EnumSensorJSON `json:"sensors"`
	}
	json.Unmarshal(res, &enum)
	if resp.Data.Status != 0 || len(enum.Sensors) != 15 || enum.Sensors[0].ID != "ALTITUDE" || enum.Sensors[0].Unit != "m" ||
		len(enum.Sensors[0].FRCs) != 1 || enum.Sensors[0].FRCs[0] != 224 || enum.Sensors[1].ID != "CARBON_DIOXIDE" ||
		len(enum.Sensors[1].FRCs) != 2 || enum.Sensors[1].FRCs[0] != 144 || enum.Sensors[1].FRCs[1] != 224 {
		t.Errorf("enumerate: %s", res)
	}
	resp = ask(`{"mType":"iqrfSensor_Enumerate","data":{"msgId":"unbonded","req":{"nAdr":9,"param":{}}}}`)
	if resp.Data.Status != 8 || resp.Data.StatusStr != "ERROR_NADR" {
		t.Errorf("unbonded node: %+v", resp.Data)
	}
	resp = ask(`{"mType":"iqrfEmbedLedr_Pulse","data":{"msgId":"other","req":{"nAdr":1}}}`)
	if resp.Data.Status != statusBadRequest {
		t.Errorf("unsupported mType: %+v", resp.Data)
	}
	if stats.Acknowledged.Load() == 0 {
		t.Error("nothing counted as published")
	}
}

// fakeDoer answers every request with a fixed response, for the fuzzer.
type fakeDoer struct{ resp []byte }

func (d fakeDoer) Do(_ context.Context, req dpa.Frame, _ time.Duration) (*coord.Result, error) {
	res := &coord.Result{Request: req.Append(nil), Response: d.resp, RequestTime: time.Now(), ResponseTime: time.Now()}
	if err := res.Frame.Decode(d.resp); err != nil {
		return nil, err
	}
	if res.Frame.ErrN != 0 {
		return res, res.Frame.ErrN
	}
	return res, nil
}

func FuzzHandleRequest(f *testing.F) {
	f.Add([]byte(`{"mType":"iqrfSensor_ReadSensorsWithTypes","data":{"msgId":"a","req":{"nAdr":1,"param":{"sensorIndexes":[0,1]}},"returnVerbose":true}}`),
		[]byte{0x01, 0x00, 0x5e, 0x81, 0x02, 0x14, 0x00, 0x51, 0x01, 0xc8, 0x01, 0x02, 0x87, 0x09})
	f.Add([]byte(`{"mType":"iqrfSensor_Enumerate","data":{"msgId":"b","req":{"nAdr":1}}}`),
		[]byte{0x01, 0x00, 0x5e, 0xbe, 0x02, 0x00, 0x00, 0x48, 0x01, 0x01, 0x81, 0x81})
	f.Add([]byte(`{"mType":"iqrfSensor_ReadSensorsWithTypes","data":{"msgId":"c","req":{"nAdr":1,"param":{"sensorIndexes":-1}}}}`),
		[]byte{0x01, 0x00, 0x5e, 0x81, 0xff, 0xff, 0x08, 0x00})
	f.Fuzz(func(t *testing.T, body, resp []byte) {
		out := HandleRequest(context.Background(), fakeDoer{resp}, body)
		if out == nil {
			return
		}
		var r Response
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("invalid JSON response %q: %v", out, err)
		}
		if r.Data.Status == 0 && (r.Data.Rsp == nil || r.Data.StatusStr != "ok") {
			t.Fatalf("ok without a response: %s", out)
		}
	})
}

func TestBrokerOutageLosesNothing(t *testing.T) {
	broker := iqrftest.StartMosquitto(t)
	q, err := queue.Open(t.TempDir(), queue.Options{}, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// A subscriber with a persistent session: the broker keeps its
	// subscription and queues for it across the restart.
	var mu sync.Mutex
	got := map[float64]int64{}
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("outage-sub").
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetMaxReconnectInterval(500 * time.Millisecond))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("out/#", 1, func(_ paho.Client, m paho.Message) {
		var rm ReadingMessage
		if json.Unmarshal(m.Payload(), &rm) == nil {
			mu.Lock()
			got[rm.Value] = rm.UnixTime
			mu.Unlock()
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	stats := &Stats{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Broker: broker.URL(), ClientID: "outage-pub", TopicPrefix: "out", Reader: q.Reader("mqtt"), Logger: logger(), Stats: stats})
	}()
	defer func() { cancel(); <-done }()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	add := func(i int) {
		r := collector.Reading{Node: 4, Type: 1, Metric: "temperature", Value: float64(i), Time: base.Add(time.Duration(i) * time.Second)}
		if err := q.Append(r.AppendRecord(nil)); err != nil {
			t.Fatal(err)
		}
	}
	waitAll := func(n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			ok := 0
			for i := range n {
				if ts, present := got[float64(i)]; present && ts == base.Unix()+int64(i) {
					ok++
				}
			}
			mu.Unlock()
			if ok == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d readings arrived", ok, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := range 10 {
		add(i)
	}
	waitAll(10)
	broker.Stop()
	for i := 10; i < 30; i++ {
		add(i)
	}
	deadline := time.Now().Add(10 * time.Second)
	for stats.Errors.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the publisher did not notice the broker was gone")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // a stretch of outage
	if p := q.Reader("mqtt").Pending(); p != 20 {
		t.Errorf("%d readings pending during the outage, want 20", p)
	}
	broker.Start()
	waitAll(30)
	// Each reading is counted acknowledged once (on its PUBACK), however
	// often it was sent.
	for deadline := time.Now().Add(10 * time.Second); q.Reader("mqtt").Pending() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d pending", q.Reader("mqtt").Pending())
		}
	}
	if a, s := stats.Acknowledged.Load(), stats.Sent.Load(); a != 30 || s < 30 {
		t.Errorf("acknowledged %d (want 30), sent %d (want at least 30)", a, s)
	}
}
