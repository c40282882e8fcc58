#!/usr/bin/env python3
"""A kai module in plain Python: the context arrives as JSON on stdin, the result leaves as
JSON on stdout, and anything else goes to stderr. See docs/PROTOCOL.md."""
import json
import sys

ctx = json.load(sys.stdin)
state = ctx.get("state") or {}
runs = state.get("runs", 0) + 1

print(f"{ctx['module']}: run {runs} for {ctx['entity']}", file=sys.stderr)

json.dump(
    {
        "status": "done",
        "summary": f"Hello {ctx['entity']} from Python (run {runs})",
        "details": {"trigger": ctx["trigger"]["type"], "attempt": ctx["attempt"]},
        "state": {"runs": runs},
    },
    sys.stdout,
)
