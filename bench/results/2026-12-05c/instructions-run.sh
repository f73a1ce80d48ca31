#!/usr/bin/env bash
# usage: run.sh BROKER TYPES FORM  -> prints instructions per reply
set -euo pipefail
B=$1; T=$2; FORM=$3
LOAD=/work/wt-mem/target/release/makler-load
OUT=/tmp/mem-cg/out.$$
valgrind --tool=callgrind --callgrind-out-file=$OUT.cg "$B" --listen 127.0.0.1:0 --quiet --no-multicast --ttl 3600 --max-instances 40000 --max-per-source 0 --probe-interval 0 --rate-limit 0 --max-per-network 0 > $OUT.log 2>&1 &
P=$!
for i in $(seq 100); do grep -q listening $OUT.log && break; sleep 0.2; done
A=$(grep -o 'udp=[0-9.:]*' $OUT.log | sed 's/udp=//')
$LOAD populate --quiet --target $A --instances 10000 --types $T --prefix svc >/dev/null 2>&1 || true
seq 0 $((T-1)) | sed 's/^/svc/' > $OUT.names
callgrind_control -z $P >/dev/null 2>&1
$LOAD query --quiet --names $OUT.names --duration 10 --rounds 1 --target $FORM=$A > $OUT.q
callgrind_control -d $P >/dev/null 2>&1
sleep 1
kill $P; wait $P 2>/dev/null || true
RATE=$(awk '$1 ~ /^'$FORM'/ {print $2}' $OUT.q | tail -1)
BYTES=$(awk '$1 ~ /^'$FORM'/ {print $8}' $OUT.q | tail -1)
# the dump after zeroing is the file with the highest suffix
F=$(ls $OUT.cg.* | head -1)
IR=$(grep -E '^(summary|totals):' $F | head -1 | awk '{print $2}')
echo "$(basename $(dirname $(dirname $(dirname $B))))/$(basename $B) types=$T form=$FORM rate=$RATE bytes=$BYTES Ir=$IR per_reply=$(python3 -c "print(round($IR/($RATE*10)))")"
rm -f $OUT.*
