#!/bin/bash
# On the bare box, in the checkout's root, after scripts/offline/pack.sh's bundle came
# along: unpack PyAV and ffmpeg, index the tiles, a smoke render, then
# scripts/bench_workers.py at ultrafast ($FAST workers) and the default preset ($SLOW),
# and the shot pass in one process against $SHOTS workers (joblib's fresh processes and
# the render's own, forked from its server). Stops starting work after
# $BUDGET seconds. Results in $OUT: log lines, bench tables, records (rec.tgz).
#
#   BUDGET=420 OUT=/tmp/out bash scripts/offline/run.sh
PY=${PY:-python3}; B=${BUNDLE:-.dev}; FAST=${FAST:-"1 16 8 4"}; SLOW=${SLOW:-"16 8 4"}
SHOTS=${SHOTS:-"2 4 8 16"}; FRAMES=${FRAMES:-0}; BUDGET=${BUDGET:-400}; OUT=${OUT:-/tmp/out}
SITE=${SITE:-/tmp/site}; T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
mkdir -p "$SITE" "$OUT"
[ -e "$SITE/av" ] || tar -xJf "$B/av.tar.xz" -C "$SITE" || exit 3
[ -x /tmp/ffmpeg ] || { xz -dc "$B/ffmpeg.xz" > /tmp/ffmpeg && chmod +x /tmp/ffmpeg; } || exit 3
export PYTHONPATH=$SITE:$PWD MOSAIC_FFMPEG=/tmp/ffmpeg PYTHONUNBUFFERED=1
el unpacked; nproc; lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)|L3"
$PY -c "import sys,numpy,numba,cv2,sklearn,scipy,av;print(sys.version.split()[0],'numpy',numpy.__version__,'numba',numba.__version__,'cv2',cv2.__version__,'sklearn',sklearn.__version__,'scipy',scipy.__version__,'av',av.__version__)" || exit 4
N=$(cat "$B/tiles")
[ -e /tmp/corpus/t00000.jpg ] || $PY scripts/offline/tile_atlas.py unpack "$B/atlas.webp" /tmp/corpus "$N" || exit 5
[ -e /tmp/index/manifest.json ] || $PY -m pipeline index --corpus /tmp/corpus --index /tmp/index --set index.prune_percentile=0 -q
[ -e /tmp/index/manifest.json ] || exit 6
el indexed
V=$B/clip.mp4; PIN=""
command -v taskset >/dev/null || { PIN=--no-pin; echo "no taskset: runs not pinned"; }
$PY -m pipeline render "$V" --index /tmp/index --out /tmp/smoke.mp4 --frames 64 --scale 4 --preset ultrafast -q || exit 7
el smoke
$PY scripts/offline/shot_pass.py "$V" $SHOTS 2>&1 | tee "$OUT/shots.txt"
el shots
mkdir -p /tmp/rec
(while sleep 5; do tar -C /tmp -czf "$OUT/rec.part" rec 2>/dev/null && mv "$OUT/rec.part" "$OUT/rec.tgz"; done) &
$PY scripts/bench_workers.py "$V" --index /tmp/index --workers $FAST --preset ultrafast --frames "$FRAMES" --records /tmp/rec --budget "$(left)" $PIN 2>&1 | tee "$OUT/fast.txt"
el fast
[ "$(left)" -gt 30 ] && $PY scripts/bench_workers.py "$V" --index /tmp/index --workers $SLOW --preset slow --frames "$FRAMES" --records /tmp/rec --budget "$(left)" $PIN 2>&1 | tee "$OUT/slow.txt"
el slow
kill %1 2>/dev/null; tar -C /tmp -czf "$OUT/rec.tgz" rec; rm -f "$OUT/rec.part"
el done
