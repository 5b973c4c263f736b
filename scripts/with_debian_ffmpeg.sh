#!/bin/sh
# Run a command with Debian 12's ffmpeg 5.1 as the system ffmpeg, without installing it:
# its packages (and the libraries this machine lacks) are fetched with `apt-get download`
# and unpacked into a private prefix; a wrapper on PATH sets LD_LIBRARY_PATH for ffmpeg
# alone. Used to show the suite passes with an older system ffmpeg:
#   sh scripts/with_debian_ffmpeg.sh make test
set -eu
PREFIX=${DEB_FFMPEG_PREFIX:-/tmp/deb-ffmpeg}
if [ ! -x "$PREFIX/bin/ffmpeg" ]; then
    mkdir -p "$PREFIX/debs" "$PREFIX/root" "$PREFIX/bin"
    pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances --no-pre-depends ffmpeg | grep -E '^[a-z0-9]' | sort -u)
    missing=""
    for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    (cd "$PREFIX/debs" && apt-get download $missing >/dev/null)
    for d in "$PREFIX"/debs/*.deb; do dpkg -x "$d" "$PREFIX/root"; done
    lib="$PREFIX/root/usr/lib/x86_64-linux-gnu"
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s:%s/pulseaudio:%s/blas:%s/lapack exec %s "$@"\n' \
        "$lib" "$lib" "$lib" "$lib" "$PREFIX/root/usr/bin/ffmpeg" > "$PREFIX/bin/ffmpeg"
    chmod +x "$PREFIX/bin/ffmpeg"
fi
"$PREFIX/bin/ffmpeg" -version | head -1 >&2
PATH="$PREFIX/bin:$PATH" exec "$@"
