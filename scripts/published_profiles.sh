#!/usr/bin/env bash
# Regenerates the published-hardware profiles in models/<model>/profiles/ (see the README there).
#
#   bash scripts/published_profiles.sh            # from the repository root
#   EDGECUT=target/release/edgecut bash scripts/published_profiles.sh
#
# Reads ../shared/data/profiles/published.csv beside the clone (or $EDGECUT_PUBLISHED). The
# batch curve comes from models/efficientnet-b0/profiles/cpu.json, which edgecut measures itself:
#   edgecut profile models/efficientnet-b0 --backend cpu --batch 1,2,4,8,16,32,62 --warmup 1 \
#     --runs 3 --out models/efficientnet-b0/profiles/cpu.json
# (not rerun here: it takes minutes and its times are this machine's).
set -euo pipefail
EDGECUT=${EDGECUT:-target/debug/edgecut}
CSV=${EDGECUT_PUBLISHED:-../shared/data/profiles/published.csv}
B0=models/efficientnet-b0
MV2=models/mobilenet-v2
LITE0=models/efficientnet-lite0
CURVE=$B0/profiles/cpu.json
mkdir -p $MV2/profiles $LITE0/profiles

pub() { # model out hardware [extra flags...]
  local model=$1 out=$2 hw=$3
  shift 3
  "$EDGECUT" profile "$model" --published "$CSV" --hardware "$hw" --out "$out" "$@" >/dev/null
  echo "wrote $out"
}

# Servers: batch 1 published, batches 1..62 by edgecut's measured CPU batch curve.
pub $B0 $B0/profiles/t4.json "T4" --batch-curve $CURVE --max-batch 62
pub $B0 $B0/profiles/a10g.json "A10G" --batch-curve $CURVE --max-batch 62
# Devices.
pub $B0 $B0/profiles/xeon-2vcpu.json "Xeon"
pub $B0 $B0/profiles/graviton-1vcpu.json "Graviton"
pub $MV2 $MV2/profiles/pixel4-gpu.json "Pixel 4"
pub $MV2 $MV2/profiles/a03s-gpu.json "A03s"
pub $MV2 $MV2/profiles/iphonexs-gpu.json "iPhone XS"
pub $LITE0 $LITE0/profiles/pixel4-gpu.json "Pixel 4" --kind device-gpu --precision fp32
# MobileNetV2 servers: no published server figures, so EfficientNet-B0's, scaled by the MAC ratio.
for s in t4 a10g; do
  "$EDGECUT" profile $MV2 --from $B0/profiles/$s.json --mac-scaled-from $B0 \
    --out $MV2/profiles/$s.json >/dev/null
  echo "wrote $MV2/profiles/$s.json"
done
