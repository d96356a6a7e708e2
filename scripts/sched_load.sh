#!/bin/bash
# The scheduler-under-load measurement of docs/scheduling.md: `edgecut simulate` on the step trace,
# the LTE, 5G and every 3G Norway trace, at 2 and 0.1 requests/s, with every fixed policy, dynamic
# and oracle; one JSON file per run in OUT.
# Usage: bash scripts/sched_load.sh [EDGECUT_BINARY] [OUT]   (from the repository root; traces in
# ../shared/data/traces, or EDGECUT_TRACES)
set -euo pipefail
B=${1:-target/release/edgecut}
O=${2:-sched-load}
T=${EDGECUT_TRACES:-../shared/data/traces}
M=models/efficientnet-b0
mkdir -p "$O"
P=device,server
for b in blocks_1 blocks_3 blocks_5 blocks_11; do for e in fp32 fp16 int8; do P=$P,static:$b:$e; done; done
P=$P,dynamic,oracle
specs=("step|steps:0.3Mbit,30Mbit@20" "lte|$T/mahimahi-lte/Verizon-LTE-short.up"
  "5gcar1|$T/5g-mobility/car-driving-trace-1.csv" "5gcar2|$T/5g-mobility/car-driving-trace-2.csv"
  "5gwalk|$T/5g-mobility/walking-trace.csv")
for f in "$T"/norway-hsdpa-3g/norway_*; do specs+=("3g-$(basename "$f")|$f"); done
for spec in "${specs[@]}"; do
  IFS='|' read -r name trace <<< "$spec"
  for rate in 2 0.1; do
    "$B" simulate "$M" --trace "$trace" --rate "$rate" --policies "$P" --json > "$O/$name@$rate.json"
  done
done
