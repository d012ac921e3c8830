#!/usr/bin/env bash
# Makes the image deploy/Containerfile builds on, from Debian packages alone, for machines that reach Debian's mirror
# but not Microsoft's registry: a minimal bookworm (debootstrap) with the libraries a self-contained .NET app loads.
#   sudo deploy/base-image.sh                 -> podman image localhost/bncluster-base:bookworm
#   sudo deploy/base-image.sh --docker        -> the same image in Docker
# Needs root and the debootstrap package. Takes about 40 s; the image is about 130 MB.
set -euo pipefail
tool=podman
[ "${1:-}" = "--docker" ] && tool=docker
tag=localhost/bncluster-base:bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# libicu72: globalization; libssl3: SHA-256 and the random tokens (System.Security.Cryptography); the rest of what .NET
# needs (libc6, libgcc-s1, libstdc++6, zlib1g) is in minbase.
debootstrap --variant=minbase --include=libicu72,libssl3,ca-certificates,tzdata bookworm "$root" "$mirror" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | "$tool" import --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "made $tag"
