#!/usr/bin/env bash
# Publishes bncluster for Linux x64 into one folder that every deployment here runs: the systemd units install it as
# /opt/bncluster, the Containerfile copies it into the image. Self-contained by default (the target needs no .NET,
# only glibc, libstdc++, ICU and OpenSSL, as in the runtime-deps images).
#   deploy/publish.sh                          -> deploy/out/bncluster (self-contained)
#   deploy/publish.sh --framework-dependent    -> the same, running on an installed .NET 10 runtime (10 MB instead of 89)
#   deploy/publish.sh --out DIR                -> into DIR instead
set -euo pipefail
cd "$(dirname "$0")/.."

out=deploy/out/bncluster
self_contained=true
while [ $# -gt 0 ]; do
  case "$1" in
    --framework-dependent) self_contained=false ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    *) echo "publish.sh: unknown argument $1 (expected --framework-dependent or --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

# A clean folder: files of an earlier publish (the other mode's runtime, say) must not linger in the image. Only an
# earlier publish is removed, never a folder of something else.
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ]; then
  [ -f "$out/bncluster.dll" ] || { echo "publish.sh: $out is not empty and holds no earlier publish of bncluster; not replacing it" >&2; exit 2; }
  rm -rf "$out"
fi
dotnet publish src/BnCluster.Node/BnCluster.Node.csproj -c Release -r linux-x64 --self-contained "$self_contained" \
  -p:DebugType=none -o "$out" --nologo
echo "published $out/bncluster ($( [ "$self_contained" = true ] && echo self-contained || echo framework-dependent ))"
