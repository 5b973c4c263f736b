#!/bin/bash
# Pack what a scaling run needs on a bare x86-64 Linux box with Python 3.11+, numpy,
# scipy, scikit-learn, OpenCV, numba, joblib and tqdm but no network: PyAV and ffmpeg
# (xz-compressed: PyAV from this checkout's .venv, ffmpeg $FFMPEG or imageio-ffmpeg 0.6.0's
# from PyPI), the index's tiles as one image
# (tile_atlas.py) and the clip. About 60 MB; run.sh unpacks and runs it there.
#
#   bash scripts/offline/pack.sh [INDEX] [CLIP] [DEST]
#   (defaults: .cache/media/photo-index-40k .cache/media/multishot-640x480.mp4 .dev)
set -euo pipefail
INDEX=${1:-.cache/media/photo-index-40k}; CLIP=${2:-.cache/media/multishot-640x480.mp4}
DEST=${3:-.dev}; PY=.venv/bin/python
SITE=$($PY -c "import av, os; print(os.path.dirname(os.path.dirname(av.__file__)))")
if [ -z "${FFMPEG:-}" ]; then
  # imageio-ffmpeg 0.6.0's static ffmpeg 7.0.2 packs to 21 MB (0.8's 9.0.2 to 48 MB)
  WHL=$(mktemp -d); trap 'rm -rf "$WHL"' EXIT
  $PY -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      -d "$WHL" imageio-ffmpeg==0.6.0
  (cd "$WHL" && unzip -q -o ./*.whl 'imageio_ffmpeg/binaries/ffmpeg-*')
  FFMPEG=$(ls "$WHL"/imageio_ffmpeg/binaries/ffmpeg-*)
fi
mkdir -p "$DEST"
grep -qx "/$DEST/" .git/info/exclude 2>/dev/null || echo "/$DEST/" >> .git/info/exclude
(cd "$SITE" && tar -cf - av av.libs av-*.dist-info) | xz -9e -T0 > "$DEST/av.tar.xz"
xz -9e -T0 -c "$FFMPEG" > "$DEST/ffmpeg.xz"
echo "$($PY scripts/offline/tile_atlas.py pack "$INDEX" "$DEST/atlas.webp")" > "$DEST/tiles"
cp "$CLIP" "$DEST/clip.mp4"
TOTAL=$(du -cb "$DEST"/* | tail -1 | cut -f1)
echo "$DEST: $TOTAL bytes"
[ "$TOTAL" -lt 60000000 ] || echo "warning: $DEST is over 60 MB; with the checkout it may not fit a 64 MiB transfer"
