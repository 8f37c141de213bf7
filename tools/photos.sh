#!/usr/bin/env bash
# make photos: real photographs to learn from, without installing anything. Debian's mate-backgrounds package
# (GPL-2+, copyright holders in COPYRIGHT) holds 12 nature photographs of 1280x1024 to 2560x1920; `apt-get
# download` fetches the .deb (no root) and `dpkg-deb -x` unpacks it. The bundled sample photos are copied next
# to them, and three list files (sources for `sr-degrade build --src`, DegradeOnTheFly and data.photos) fix
# one split by photo, never by crop:
#   train.txt   12 photos: 4 bundled (astronaut, chelsea, retina, rocket) + 8 nature ones
#   select.txt   3 photos the recipes are chosen on: coffee, hubble_deep_field (the demo's held-out pair), Dune
#   report.txt   3 photos only for the figures reported: LadyBird, RainDrops, Wood
# Usage: tools/photos.sh [DIR] (default photos/, git-ignored). Run again: nothing to do once complete.
set -euo pipefail
dir=${1:-photos}
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$dir/.complete" ]; then
    echo "photos: $dir is complete ($(grep -c . "$dir/train.txt") train, 3 select, 3 report photos)"
    exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "error: make photos needs apt-get and dpkg-deb (Debian, Ubuntu) to fetch mate-backgrounds; elsewhere put" \
        "photos in a folder yourself and give it as --src / data.photos" >&2
    exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -qq mate-backgrounds >/dev/null 2>"$tmp/apt.log"); then
    echo "error: apt-get download mate-backgrounds failed ($(tail -1 "$tmp/apt.log")); run apt-get update" \
        "(as root) and try again" >&2
    exit 2
fi
dpkg-deb -x "$tmp"/mate-backgrounds_*.deb "$tmp/x"
nature="$tmp/x/usr/share/backgrounds/mate/nature"
mkdir -p "$dir/mate" "$dir/sample"
cp "$nature"/*.jpg "$dir/mate/"
cp "$tmp/x/usr/share/doc/mate-backgrounds/copyright" "$dir/mate/COPYRIGHT"
samples="$here/packages/sr-degrade/src/sr_degrade/data/samples"
cp "$samples"/*.png "$samples"/*.jpg "$samples/LICENSES.md" "$dir/sample/"
printf '%s\n' sample/astronaut.png sample/chelsea.png sample/retina.jpg sample/rocket.jpg \
    mate/Aqua.jpg mate/Blinds.jpg mate/FreshFlower.jpg mate/Garden.jpg mate/GreenMeadow.jpg mate/Storm.jpg \
    mate/TwoWings.jpg mate/YellowFlower.jpg > "$dir/train.txt"
printf '%s\n' sample/coffee.png sample/hubble_deep_field.jpg mate/Dune.jpg > "$dir/select.txt"
printf '%s\n' mate/LadyBird.jpg mate/RainDrops.jpg mate/Wood.jpg > "$dir/report.txt"
n=$(ls "$dir/mate"/*.jpg | wc -l)
if [ "$n" -ne 12 ]; then
    echo "error: mate-backgrounds held $n nature photographs, not the 12 the split names; see $nature" >&2
    exit 1
fi
touch "$dir/.complete"
echo "photos: $dir/mate (12 nature photographs, GPL-2+, see $dir/mate/COPYRIGHT) and $dir/sample (6 bundled);" \
    "splits $dir/train.txt (12), $dir/select.txt (3), $dir/report.txt (3)"
