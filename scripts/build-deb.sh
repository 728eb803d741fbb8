#!/usr/bin/env bash
# Builds vaultdisk_<version>_<arch>.deb with Debian's own dpkg-deb: the release binary, man
# pages and completions (staged by scripts/install.sh), the systemd unit vaultdisk@.service,
# and docs; Depends computed by dpkg-shlibdeps from the binary, plus fuse3.
#   scripts/build-deb.sh [OUTDIR]         (default: target/debian)
# VAULTDISK_BIN=PATH packages that binary instead of building one.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/target/debian}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)"
arch="$(dpkg --print-architecture)"

bin="${VAULTDISK_BIN:-}"
if [ -z "$bin" ]; then
    (cd "$repo" && cargo build --release --quiet)
    bin="$repo/target/release/vaultdisk"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stage="$work/root"

DESTDIR="$stage" VAULTDISK_BIN="$bin" bash "$repo/scripts/install.sh" /usr >/dev/null
# Debian's zsh looks in vendor-completions for packaged functions.
mkdir -p "$stage/usr/share/zsh/vendor-completions"
mv "$stage/usr/share/zsh/site-functions/_vaultdisk" "$stage/usr/share/zsh/vendor-completions/"
rmdir "$stage/usr/share/zsh/site-functions"
strip --strip-unneeded "$stage/usr/bin/vaultdisk"

install -D -m 0644 "$repo/packaging/systemd/vaultdisk@.service" \
    "$stage/lib/systemd/system/vaultdisk@.service"
doc="$stage/usr/share/doc/vaultdisk"
install -d "$doc"
install -m 0644 "$repo/README.md" "$repo/docs/architecture.md" "$doc/"
install -m 0644 "$repo/packaging/debian/copyright" "$doc/copyright"
gzip -9n -c "$repo/CHANGELOG.md" >"$doc/changelog.gz"

# dpkg-shlibdeps wants a debian/control beside it; it only reads the source stanza.
mkdir -p "$work/src/debian"
printf 'Source: vaultdisk\n\nPackage: vaultdisk\nArchitecture: any\n' >"$work/src/debian/control"
shlibs="$(cd "$work/src" && dpkg-shlibdeps -O "$stage/usr/bin/vaultdisk" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')"

installed_kb="$(du -sk "$stage" | cut -f1)"
mkdir -p "$stage/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SHLIBS@/$shlibs/" \
    -e "s/@SIZE@/$installed_kb/" "$repo/packaging/debian/control.in" >"$stage/DEBIAN/control"
install -m 0755 "$repo/packaging/debian/postinst" "$repo/packaging/debian/postrm" "$stage/DEBIAN/"
(cd "$stage" && find usr lib -type f -exec md5sum {} + | sort -k2) >"$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/vaultdisk_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
