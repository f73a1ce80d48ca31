#!/bin/bash
for t in /proc/$1/task/*; do /tmp/ka/slice ${t##*/} ${SLICE:-10000000} 2>/dev/null; done
for t in /proc/$1/task/*; do c=$(cat $t/comm); case $c in forward-0) taskset -p 1 ${t##*/} >/dev/null;; forward-1) taskset -p 2 ${t##*/} >/dev/null;; esac; done
