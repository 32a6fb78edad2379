#!/usr/bin/env bash
# Fail on a breaking change to the contracts: `buf breaking` (the `breaking:` rules in buf.yaml)
# of proto/ as it is in the work tree against proto/ of an earlier commit.
#
#   scripts/check_breaking.sh            # against HEAD~1, the previous commit (CI: a fresh clone of main)
#   scripts/check_breaking.sh REF        # against REF (a branch, tag or commit), e.g. origin/main
#   BUF_BREAKING_AGAINST=REF make lint   # the same through make
#
# The earlier proto/ is read with `git archive`, so it works in a worktree and needs no network.
# Exit 0 when nothing breaks, or with a note when there is nothing to compare with (no git, the
# repository's first commit, a shallow clone without REF, or no proto/ at REF); 1 on a breaking
# change, buf naming each one (file, message, field).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUF="${BUF:-.venv/bin/buf}"
AGAINST="${1:-${BUF_BREAKING_AGAINST:-HEAD~1}}"

skip() { echo "check_breaking.sh: skipped, $1"; exit 0; }

command -v git >/dev/null 2>&1 && git rev-parse --git-dir >/dev/null 2>&1 || skip "not a git checkout"
commit="$(git rev-parse --verify -q "$AGAINST^{commit}" 2>/dev/null)" \
    || skip "no commit $AGAINST to compare with (first commit or shallow clone)"
git cat-file -e "$commit:proto" 2>/dev/null || skip "no proto/ at $AGAINST"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/shop-check-breaking.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
git archive "$commit" proto | tar -x -C "$TMP"

if "$BUF" breaking proto --against "$TMP/proto" --error-format text >"$TMP/out.txt" 2>&1; then
    echo "check_breaking.sh: no breaking change in proto/ against $AGAINST (${commit:0:12})"
    exit 0
fi
echo "check_breaking.sh: breaking change in proto/ against $AGAINST (${commit:0:12}):" >&2
sed -e "s#$TMP/##g" "$TMP/out.txt" >&2
exit 1
