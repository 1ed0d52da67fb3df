#!/usr/bin/env bash
# Seeds the fuzz corpus (fuzz/corpus/sip_scan, git-ignored) from the scanner's test
# corpus, plus a few streams: several messages back to back with keep-alives.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here/../siplb-core/tests/corpus"
dst="$here/corpus/sip_scan"
mkdir -p "$dst"
for f in "$src"/*/*.sip; do
    cp "$f" "$dst/$(basename "$(dirname "$f")")_$(basename "$f")"
done
valid=("$src"/valid/*.sip)
for i in 0 5 10 15 20; do
    { printf '\r\n\r\n'; cat "${valid[$i]}"; printf '\r\n'; cat "${valid[$((i + 1))]}" "${valid[$((i + 2))]}"; } \
        > "$dst/stream_$i.sip"
done
echo "seeded $(ls "$dst" | wc -l) files into $dst"
