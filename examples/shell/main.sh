#!/bin/sh
# A kai module in POSIX shell with nothing but sed: the context arrives as one line of JSON
# on stdin, the result leaves as one JSON object on stdout, and anything else goes to stderr.
# See docs/PROTOCOL.md. (A real module would use jq; this one shows how little is needed.)
set -eu
ctx=$(cat)

# kai writes the context compactly, so simple values can be picked out with sed.
entity=$(printf '%s' "$ctx" | sed -n 's/.*"entity":"\([^"\\]*\)".*/\1/p')
runs=$(printf '%s' "$ctx" | sed -n 's/.*"state":{"runs":\([0-9]*\)}.*/\1/p')
runs=$(( ${runs:-0} + 1 ))

echo "shell-example: run $runs for $entity" >&2

printf '{"status":"done","summary":"Hello %s from shell (run %d)","state":{"runs":%d}}\n' \
  "$entity" "$runs" "$runs"
