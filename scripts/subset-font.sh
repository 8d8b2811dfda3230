#!/usr/bin/env bash
# Rebuilds crates/mdm-prime-core/assets/fonts/DejaVuSans-subset.ttf, the font embedded in the
# binary for plots (crates/mdm-prime-core/src/plot.rs), and its licence file beside it.
#
# Source: Debian's fonts-dejavu-core (2.37-6 when this was written): `apt-get install
# fonts-dejavu-core`. Subsetter: fontTools from PyPI (4.68.0): `pip install fonttools`.
# The subset keeps printable ASCII, Latin-1, Greek and the few symbols plot labels use
# (ℓ, −, ±, ×, ≤, ≥, ≈, …, arrows, sub/superscript digits), drops hinting (the rasteriser,
# ab_glyph, does not hint) and the layout tables: ~760 KB → ~40 KB.
set -euo pipefail
src=${1:-/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf}
out_dir="$(cd "$(dirname "$0")/.." && pwd)/crates/mdm-prime-core/assets/fonts"
mkdir -p "$out_dir"
pyftsubset "$src" \
  --unicodes="U+0020-007E,U+00A0-00FF,U+0391-03A9,U+03B1-03C9,U+2013-2014,U+2018-201D,U+2026,U+2070-2079,U+2080-2089,U+2113,U+2190-2193,U+2212,U+221A,U+221E,U+2248,U+2264-2265" \
  --no-hinting --layout-features='' --drop-tables+=FFTM \
  --output-file="$out_dir/DejaVuSans-subset.ttf"
cp /usr/share/doc/fonts-dejavu-core/copyright "$out_dir/DejaVuSans-LICENSE.txt"
ls -l "$out_dir"
