#!/usr/bin/env bash
# IQRF step of the demo: the collector reads a simulated IQRF coordinator on a
# pseudo-terminal (three sensor nodes built from the DPA reference's vectors)
# and the readings arrive in a real carbon-cache and on a real mosquitto broker;
# an IQRF Gateway Daemon style JSON API request is answered over MQTT.
set -euo pipefail
: "${DEMO_DIR:?run through make demo}" "${BIN:?run through make demo}"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
fail() { echo "demo-iqrf: $*" >&2; for f in "$D"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
D="$DEMO_DIR/iqrf"
mkdir -p "$D/carbon/conf" "$D/carbon/storage/whisper" "$D/carbon/storage/lists" "$D/carbon/log"
CARBON_PORT=$(freeport)
MQTT_PORT=$(freeport)

# carbon-cache of our own: 1-second retention, plaintext receiver on loopback.
cat > "$D/carbon/conf/carbon.conf" <<CONF
[cache]
STORAGE_DIR = $D/carbon/storage
LOCAL_DATA_DIR = $D/carbon/storage/whisper
WHITELISTS_DIR = $D/carbon/storage/lists
CONF_DIR = $D/carbon/conf
LOG_DIR = $D/carbon/log
PID_DIR = $D/carbon
ENABLE_LOGROTATION = False
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 100000
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = $CARBON_PORT
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_PORT = 0
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = 0
CONF
printf '[all]\npattern = .*\nretentions = 1s:6h\n' > "$D/carbon/conf/storage-schemas.conf"
setsid carbon-cache --config="$D/carbon/conf/carbon.conf" --pidfile="$D/carbon/carbon.pid" --debug start > "$D/carbon.log" 2>&1 &
carbon=$!
echo "kill -TERM -$carbon 2>/dev/null; wait $carbon 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"

printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" > "$D/mosquitto.conf"
/usr/sbin/mosquitto -c "$D/mosquitto.conf" > "$D/mosquitto.log" 2>&1 &
broker=$!
echo "kill -TERM $broker 2>/dev/null; wait $broker 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"

for _ in $(seq 150); do
  (exec 3<>/dev/tcp/127.0.0.1/$CARBON_PORT) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$MQTT_PORT) 2>/dev/null && break
  sleep 0.2
done
(exec 3<>/dev/tcp/127.0.0.1/$CARBON_PORT) 2>/dev/null || fail "carbon-cache did not start"
(exec 3<>/dev/tcp/127.0.0.1/$MQTT_PORT) 2>/dev/null || fail "mosquitto did not start"
echo "carbon-cache on 127.0.0.1:$CARBON_PORT (whisper files in $D/carbon/storage/whisper), mosquitto on 127.0.0.1:$MQTT_PORT"

# The simulated coordinator: a pty pair, the collector opens the slave side as a serial port.
"$BIN/iqrf-sim" --link "$D/ttyIQRF" > "$D/sim.log" 2>&1 &
sim=$!
echo "kill -TERM $sim 2>/dev/null; wait $sim 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"
for _ in $(seq 50); do [ -e "$D/ttyIQRF" ] && break; sleep 0.1; done
[ -e "$D/ttyIQRF" ] || fail "iqrf-sim did not start"
head -1 "$D/sim.log"

# Readings on MQTT: subscribe before the collector starts.
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t 'iotfabric/demo/#' -v -C 6 -W 30 > "$D/mqtt-readings.txt" 2>&1 &
sub=$!

say "iqrf-collector --serial $D/ttyIQRF --interval 2s --graphite 127.0.0.1:$CARBON_PORT --mqtt tcp://127.0.0.1:$MQTT_PORT --prefix iotfabric.demo --buffer-dir $D/buffer --metrics 127.0.0.1:0"
"$BIN/iqrf-collector" --serial "$D/ttyIQRF" --interval 2s --graphite "127.0.0.1:$CARBON_PORT" \
  --mqtt "tcp://127.0.0.1:$MQTT_PORT" --prefix iotfabric.demo --buffer-dir "$D/buffer" --metrics 127.0.0.1:0 \
  > "$D/collector.log" 2>&1 &
col=$!
echo "kill -TERM $col 2>/dev/null; wait $col 2>/dev/null || true" >> "$DEMO_DIR/cleanup.sh"

# Carbon: wait until node 2's temperature has at least three points.
wsp="$D/carbon/storage/whisper/iotfabric/demo/node2/temperature.wsp"
points=0
for _ in $(seq 60); do
  if [ -f "$wsp" ]; then
    points=$(whisper-fetch --from=$(( $(date +%s) - 120 )) "$wsp" | grep -vc None || true)
    [ "$points" -ge 3 ] && break
  fi
  kill -0 "$col" 2>/dev/null || fail "iqrf-collector exited"
  sleep 0.5
done
[ "$points" -ge 3 ] || fail "fewer than 3 points of node 2's temperature reached carbon"
say "find $D/carbon/storage/whisper -name '*.wsp' | sort"
(cd "$D/carbon/storage/whisper" && find . -name '*.wsp' | sort | sed 's|^\./||')
say "whisper-fetch --from=-60s iotfabric/demo/node2/temperature.wsp   # one point per poll, at the time it was read"
whisper-fetch --from=$(( $(date +%s) - 60 )) "$wsp" | grep -v None

wait "$sub" || true
say "mosquitto_sub -t 'iotfabric/demo/#' -v -C 6"
cat "$D/mqtt-readings.txt"
[ "$(grep -c '^iotfabric/demo/' "$D/mqtt-readings.txt")" -ge 6 ] || fail "readings did not arrive on MQTT"

# The IQRF Gateway Daemon JSON API, as existing IQRF tools use it.
req='{"mType":"iqrfSensor_ReadSensorsWithTypes","data":{"msgId":"demo","req":{"nAdr":2,"param":{"sensorIndexes":[0,1]}},"returnVerbose":true}}'
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t Iqrf/DpaResponse -C 1 -W 20 > "$D/api.txt" 2>&1 &
api=$!
sleep 0.5
say "mosquitto_pub -t Iqrf/DpaRequest -m '$req'"
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -q 1 -t Iqrf/DpaRequest -m "$req"
wait "$api" || true
cat "$D/api.txt"; echo
grep -q '"statusStr":"ok"' "$D/api.txt" || fail "no answer to the JSON API request"

metrics=$(sed -n 's/.*msg="serving metrics" addr=\([^ ]*\).*/\1/p' "$D/collector.log")
say "curl -s http://$metrics/metrics | grep -E '^iqrf_(polls|readings|timeouts|buffer_depth|sent|acknowledged|tcp_acknowledged)'"
curl -s "http://$metrics/metrics" | grep -E '^iqrf_(polls|readings|timeouts|buffer_depth|sent|acknowledged|tcp_acknowledged)'
echo
echo "IQRF readings arrived in carbon ($points points of node 2's temperature) and on MQTT; the JSON API answered."
