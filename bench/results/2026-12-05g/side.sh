#!/bin/bash
# side.sh BEFORE AFTER LOAD SECONDS ROUNDS: two brokers with the same 10,000 instances over 1,000
# services; makler-load query at both in alternating rounds, binary then text, each broker's CPU per reply.
BEFORE=$1 AFTER=$2 LOAD=$3 SECS=${4:-10} ROUNDS=${5:-10}
D=$(dirname $0)
bash $D/start.sh $BEFORE before; bash $D/start.sh $AFTER after
A=$(cat before.addr) B=$(cat after.addr)
for proto in binary text; do
  chrt -f 20 $LOAD query --target before:$proto=$A/$(cat before.pid) --target after:$proto=$B/$(cat after.pid) --names $D/names.txt --duration $SECS --rounds $ROUNDS
done
kill $(cat before.pid) $(cat after.pid)
