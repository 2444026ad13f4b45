#!/bin/sh
# Build stock libvirt 11.3.0 (Debian trixie's source) with only what the harness needs:
# the Cloud Hypervisor driver, virtchd, virtlogd, virsh and the remote driver.
#
#   tools/build-libvirt.sh            # build into .cache/libvirt/inst (cached)
#   LIBVIRT_CACHE=/some/dir tools/build-libvirt.sh
#
# The source comes from Debian's archive through apt, with a private apt configuration
# in the cache directory (its own deb-src-only sources list for trixie, package lists and
# cache), so the system's apt setup is left as it is and no binary package comes from
# trixie; the tarball's sha256 is pinned below. The build dependencies are installed from
# the system's own sources (root, or sudo, the first time). Everything is installed under
# the cache directory, state and sockets included: nothing touches the system's
# /run/libvirt or /etc/libvirt.
set -eu

VERSION=11.3.0
DEB_VERSION=11.3.0-3+deb13u3
TARBALL=libvirt_${VERSION}.orig.tar.xz
SHA256=6bcb0c42c4580436fea262ced56f68a6afe20f7390b1bea2116718cc034a0283
MIRROR=http://deb.debian.org/debian

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${LIBVIRT_CACHE:-$ROOT/.cache/libvirt}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
PREFIX=$CACHE/inst
SRC=$CACHE/src
BUILD=$CACHE/build
STAMP=$PREFIX/.bdf-harness-build
APT_DIR=$CACHE/apt
SOURCES_LIST=$APT_DIR/sources.list

MESON_OPTIONS="-Dauto_features=disabled -Ddriver_ch=enabled -Ddriver_libvirtd=enabled
 -Ddriver_remote=enabled -Djson_c=enabled -Dcurl=enabled -Dlibnl=enabled -Dreadline=enabled
 -Ddocs=disabled -Dtests=disabled -Dinit_script=none -Dnls=disabled"
WANT="version=$VERSION sha256=$SHA256 prefix=$PREFIX options=$(echo $MESON_OPTIONS)"

die() {
    echo "build-libvirt: $*" >&2
    exit 1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$PREFIX/sbin/virtchd" ]; then
    echo "build-libvirt: libvirt $VERSION already built in $PREFIX"
    exit 0
fi

BUILD_DEPS="meson ninja-build pkg-config gcc libc6-dev xsltproc libxml2-utils python3-docutils
 libglib2.0-dev libxml2-dev libgnutls28-dev libjson-c-dev libcurl4-gnutls-dev libtirpc-dev
 libnl-3-dev libnl-route-3-dev libreadline-dev xz-utils"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# --- the source tarball, through apt, verified -----------------------------------------
mkdir -p "$SRC"
if ! echo "$SHA256  $SRC/$TARBALL" | sha256sum -c --status 2>/dev/null; then
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    echo "deb-src $MIRROR trixie main" >"$SOURCES_LIST"
    # apt with only this sources list, its own lists and cache; the system's keyring
    set -- -o Dir::Etc::SourceList="$SOURCES_LIST" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache" \
        -o Dir::State::Status=/var/lib/dpkg/status -o Debug::NoLocking=1 \
        -o APT::Sandbox::User="$(id -un)"
    apt-get "$@" update -q >"$CACHE/apt-update.log" 2>&1 ||
        die "apt-get update failed (is Debian's archive reachable?); see $CACHE/apt-update.log"
    apt-cache "$@" showsrc libvirt 2>/dev/null | grep -qx "Version: $DEB_VERSION" ||
        die "Debian's archive lists no source package libvirt $DEB_VERSION (check $SOURCES_LIST)"
    # The .dsc may be gone from the mirror while the orig tarball is still there: apt then
    # reports an error but downloads the files it can; the checksum below decides.
    (cd "$SRC" && apt-get "$@" source --download-only "libvirt=$DEB_VERSION" \
        >"$CACHE/apt-source.log" 2>&1) || true
    [ -f "$SRC/$TARBALL" ] ||
        die "could not download $TARBALL from Debian's archive; see $CACHE/apt-source.log"
    echo "$SHA256  $SRC/$TARBALL" | sha256sum -c --status ||
        die "$SRC/$TARBALL: sha256 mismatch (expected $SHA256)"
fi

# --- build dependencies, from Debian (bookworm) ------------------------------------------
missing=""
for p in $BUILD_DEPS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "build-libvirt: installing$missing"
    as_root apt-get update -q >"$CACHE/apt-update.log" 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $missing >"$CACHE/apt-install.log" 2>&1 ||
        die "installing build dependencies failed; see $CACHE/apt-install.log"
fi

# --- configure, build, install -------------------------------------------------------------
rm -rf "$SRC/libvirt-$VERSION" "$BUILD" "$PREFIX"
tar -C "$SRC" -xf "$SRC/$TARBALL"
echo "build-libvirt: configuring libvirt $VERSION (log: $CACHE/meson.log)"
# shellcheck disable=SC2086
(cd "$SRC/libvirt-$VERSION" && meson setup "$BUILD" --prefix="$PREFIX" \
    --localstatedir="$PREFIX/var" --sysconfdir="$PREFIX/etc" -Drunstatedir="$PREFIX/run" \
    $MESON_OPTIONS) >"$CACHE/meson.log" 2>&1 || die "meson setup failed; see $CACHE/meson.log"
echo "build-libvirt: building (a few minutes; log: $CACHE/ninja.log)"
ninja -C "$BUILD" >"$CACHE/ninja.log" 2>&1 || die "the build failed; see $CACHE/ninja.log"
ninja -C "$BUILD" install >"$CACHE/install.log" 2>&1 ||
    die "installing into $PREFIX failed; see $CACHE/install.log"
[ -x "$PREFIX/sbin/virtchd" ] && [ -x "$PREFIX/bin/virsh" ] ||
    die "the build produced no virtchd/virsh in $PREFIX"
echo "$WANT" >"$STAMP"
echo "build-libvirt: libvirt $VERSION installed in $PREFIX"
