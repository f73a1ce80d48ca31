#!/bin/bash
# sys.sh NAME BROKER [ENV=VAL...]: broker with 10,000 instances; binary query load 4 s; perf stat syscalls per reply
N=$1 B=$2; shift 2
cd /tmp/udpb
env "$@" chrt -f 20 bash /work/wt-udpb/bench/results/2026-12-05g/start.sh $B $N
addr=$(cat $N.addr) pid=$(cat $N.pid)
for k in $(seq 0 999); do python3 -c "
import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);h,p='$addr'.rsplit(':',1);s.connect((h,int(p)));s.settimeout(5)
for k in range(1000):
  n=b'type%d'%k; s.send(bytes([0x81,7,2,len(n)])+n); s.recv(2000)
"; break; done
out=/work/wt-udpb/bench/results/2026-12-05h/sys-$N.txt
echo "# $N env: $* load $(cat /proc/loadavg)" > $out
flock /work/bench.lock bash -c "chrt -f 20 perf stat -e 'syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,context-switches,task-clock' -p $pid -- sleep 4.5 2>>$out & sleep 0.2; chrt -f 20 /tmp/udpb/makler-load query --target binary=$addr/$pid --names names.txt --duration 4 --rounds 1 >> $out 2>&1; wait"
kill $pid
python3 - $out <<'PY'
import sys,re
t=open(sys.argv[1]).read()
rate=re.search(r"^binary\s+(\d+)",t,re.M); c={}
for m in re.finditer(r"^\s+([\d.,]+)\s+(?:msec\s+)?(\S+)",t,re.M):
    c[m.group(2).split(':')[-1]]=float(m.group(1).replace(',',''))
n=c.get('sys_enter_sendto',0)+0
req=int(rate.group(1))*4 if rate else 0
print(sys.argv[1].split('/')[-1], 'rate',rate.group(1) if rate else None, {k:round(v/req,4) for k,v in c.items() if k!='task-clock'}, 'cpu us/reply', round(c['task-clock']*1000/req,2))
PY
