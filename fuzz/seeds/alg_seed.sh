#!/usr/bin/env bash
# Seeds the ALG fuzz corpus (fuzz/corpus/alg_rewrite, git-ignored) from the ALG's
# corpus and the SIP scanner's.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here/../siplb-core/tests"
dst="$here/corpus/alg_rewrite"
mkdir -p "$dst"
for f in "$src"/alg_corpus/*.sip "$src"/corpus/*/*.sip; do
    cp "$f" "$dst/$(basename "$(dirname "$f")")_$(basename "$f")"
done
echo "seeded $(ls "$dst" | wc -l) files into $dst"
