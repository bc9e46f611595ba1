#!/usr/bin/python3
"""Smoke check of a benchmark driver's output (meson test, suite bench).

Usage: check_driver.py [--scenarios A,B,...] [--impls X,Y,...] [--allocs X,Y,...] -- COMMAND...
Runs COMMAND, which must exit 0 and print, as its last line, what run_all.py
reads: one JSON object {"implementation": NAME, "scenarios": {SCENARIO:
{"median": NS, "min": NS, "max": NS}}} or a list of them. Fails naming what is
missing or malformed: every listed scenario must be reported by every listed
implementation (an empty list: by the one the driver names), with
0 < min <= median <= max. --allocs: these implementations also report
"allocs" (allocations per call, >= 0) for every scenario they report.
"""
import json
import subprocess
import sys


def main():
    args = sys.argv[1:]
    if "--" not in args:
        raise SystemExit(__doc__)
    opts, cmd = args[:args.index("--")], args[args.index("--") + 1:]
    want = {"--scenarios": [], "--impls": [], "--allocs": []}
    for k in range(0, len(opts) - 1, 2):
        want[opts[k]] = [x for x in opts[k + 1].split(",") if x]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit("driver failed with status %d: %s" % (done.returncode, " ".join(cmd)))
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise SystemExit("driver printed nothing")
    got = json.loads(lines[-1])
    got = got if isinstance(got, list) else [got]
    seen = {}
    for r in got:
        impl = r.get("implementation")
        if not isinstance(impl, str) or not isinstance(r.get("scenarios"), dict):
            raise SystemExit("not {implementation, scenarios}: %r" % (r,))
        for name, m in r["scenarios"].items():
            v = [m.get(k) for k in ("median", "min", "max")]
            if not all(isinstance(x, (int, float)) for x in v) or not 0 < v[1] <= v[0] <= v[2]:
                raise SystemExit("%s %s: bad figures %r" % (impl, name, m))
            if impl in want["--allocs"]:
                a = m.get("allocs")
                if not isinstance(a, (int, float)) or a < 0:
                    raise SystemExit("%s %s: no allocations per call (allocs) in %r" % (impl, name, m))
        seen[impl] = set(r["scenarios"])
    for impl in (want["--impls"] or list(seen)) + want["--allocs"]:
        if impl not in seen:
            raise SystemExit("no figures from %s (got: %s)" % (impl, ", ".join(seen)))
        missing = [s for s in want["--scenarios"] if s not in seen[impl]]
        if missing:
            raise SystemExit("%s reported no %s" % (impl, ", ".join(missing)))
    print("ok: %s" % "; ".join("%s (%d scenarios)" % (i, len(s)) for i, s in seen.items()))


if __name__ == "__main__":
    main()
