#!/usr/bin/env bash
# Provision the Apache Kafka (KRaft) runtime jars from Maven Central.
#
#   devstack/provision/kafka.sh            # KAFKA_VERSION defaults to the pom's
#
# Result: ${SHOP_CACHE:-$HOME/.cache/shop}/kafka/<version>/libs/*.jar, usable as
#   java -cp "$LIBS/*" kafka.tools.StorageTool format ...
#   java -cp "$LIBS/*" kafka.Kafka server.properties
# Idempotent: a stamp file (version + pom hash) short-circuits later runs.
# Maven's local repo is ~/.m2/repository unless MAVEN_REPO_LOCAL is set.
# Prints "kafka <version>: built|cached <libs dir>"; a build is announced first and shows a
# heartbeat line while Maven runs (its log: $SHOP_CACHE/logs/kafka-maven.log).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROGRESS_NAME=kafka
# shellcheck source=devstack/provision/progress.sh
source "$here/progress.sh"
pom="$here/../kafka/pom.xml"
version="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n1)}"
[ -n "$version" ] || { echo "kafka: cannot read kafka.version from $pom" >&2; exit 1; }

dest="${SHOP_CACHE:-$HOME/.cache/shop}/kafka/$version"
libs="$dest/libs"
stamp="$dest/.provisioned"
want="$version $(sha256sum "$pom" | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$libs" ]; then
  echo "kafka $version: cached $libs"
  exit 0
fi

command -v mvn >/dev/null || { echo "kafka: mvn not found (apt-get install maven)" >&2; exit 1; }
mkdir -p "$dest"

# Serialise concurrent provisioners on the same cache dir.
exec 9>"$dest/.lock"
flock 9
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$libs" ]; then
  echo "kafka $version: cached $libs"
  exit 0
fi

work="$(mktemp -d "$dest/.build.XXXXXX")"
trap 'heartbeat_stop; rm -rf "$work"' EXIT
logs="${SHOP_CACHE:-$HOME/.cache/shop}/logs"
mkdir -p "$logs"
log="$logs/kafka-maven.log"
: >"$log"

mvn_args=(-B -q --no-transfer-progress -Dstyle.color=never
          -f "$pom" "-Dkafka.version=$version"
          "-Dkafka.build.dir=$work/target" "-Dkafka.libs.dir=$work/libs")
if [ -n "${MAVEN_REPO_LOCAL:-}" ]; then
  mvn_args+=("-Dmaven.repo.local=$MAVEN_REPO_LOCAL")
fi

announce "fetching Kafka $version" "the broker's jars, from Maven Central (the cluster's event bus)" "2 min"
run_logged "fetching Kafka $version with Maven" "$log" mvn "${mvn_args[@]}" package
ls "$work/libs"/kafka_2.13-"$version".jar >/dev/null

rm -f "$stamp"
rm -rf "$libs"
mv "$work/libs" "$libs"
printf '%s\n' "$want" >"$stamp"
echo "kafka $version: built $libs"
