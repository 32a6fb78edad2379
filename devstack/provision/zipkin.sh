#!/usr/bin/env bash
# Provision Zipkin's server (with its Lens UI built in) from Maven Central: the local
# trace UI. Jaeger v2 built with `go install` has no UI assets and none are published
# to a registry, so Jaeger exports every span to Kafka in Zipkin's format as well and
# this server shows them (devstack/zipkin.py, devstack/jaeger.yaml).
#
# Result: ${SHOP_CACHE:-$HOME/.cache/shop}/zipkin/zipkin-server-<version>-exec.jar
# Idempotent; the jar is checked against its SHA-256 below before it is kept.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROGRESS_NAME=zipkin
# shellcheck source=devstack/provision/progress.sh
source "$here/progress.sh"
version=3.6.1
sha256=d8326e0ed4f43855dba81228f688554706e52578a7c782d9a90b73f8680654a1
dest="${SHOP_CACHE:-$HOME/.cache/shop}/zipkin"
jar="$dest/zipkin-server-$version-exec.jar"
if [ -f "$jar" ]; then
  echo "zipkin $version: cached $jar"
  exit 0
fi
mkdir -p "$dest"
url="https://repo1.maven.org/maven2/io/zipkin/zipkin-server/$version/zipkin-server-$version-exec.jar"
announce "fetching Zipkin $version" "the local trace UI, from Maven Central (135 MB)" "1 min"
curl -fsSL --retry 3 -o "$jar.part" "$url"
echo "$sha256  $jar.part" | sha256sum -c --quiet -
mv "$jar.part" "$jar"
echo "zipkin $version: fetched $jar"
