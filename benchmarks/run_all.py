#!/usr/bin/python3
"""marshal benchmarks: every implementation in one run, merged.

Usage: run_all.py ROOT BENCH_BINARY FIXTURE_LIBRARY [--quick]
Runs the C++ benchmark (direct C, raw libffi, marshal typed C++, dynamic
values, C API), the remote one (bench-remote next to BENCH: the surrogate and
serve/connect next to a raw socketpair ping-pong) and the peers (Python ctypes and cffi, LuaJIT with and without
its JIT, Koffi on Node.js, Mono P/Invoke: the .NET marshaler) in this process tree, then writes
benchmarks/results.json, benchmarks/results.md and benchmarks/results.svg.
A peer that is not installed is reported as missing, never silently skipped.
"""
import json
import os
import platform
import shutil
import subprocess
import sys

ROOT, BENCH, FIXTURE = sys.argv[1], sys.argv[2], sys.argv[3]
QUICK = "--quick" in sys.argv
ITER = 20000 if QUICK else 2000000
REPS = 1 if QUICK else 5
PEERS = os.path.join(ROOT, "benchmarks", "peers")

SCENARIOS = [
    ("add_i32", "add_i32(a, b)"),
    ("sum_f64", "sum_f64(double[1000], n)"),
    ("utf8_len", "utf8_len(64-byte host string)"),
    ("vec2_add", "vec2_add(Vec2, Vec2) by value"),
    ("fill_i32", "fill_i32(out int32[256])"),
    ("call_cb", "call_cb (native calls a host callback)"),
    ("utf16_len", "utf16_len(31-unit host string, UTF-16)"),
    ("out_struct", "out_struct(out Point*)"),
    ("out_string", "out_string(caller-allocated char[64])"),
    ("struct_array", "struct_array(Point[100] in)"),
    ("vtable_method", "vtable_method (ICounter::Add via the vtable)"),
    ("same_apartment", "same_apartment (an STA's own object, direct)"),
    ("proxy_call", "proxy_call (MTA -> STA object, marshaled)"),
    ("cb_thread", "cb_thread (callback from a native thread)"),
]
# Scale rows: large data, reported as bytes per second next to memcpy of the same
# bytes (the input's, or the output's for fill), in the same run.
SCALE = [
    ("scale_sum_f64", "sum_f64 over 10^6 doubles (8 MB in)", 8000000),
    ("scale_utf8_ascii", "utf8_len of a 1 MiB ASCII text", None),
    ("scale_utf8_mixed", "utf8_len of a 1 MiB mixed text (2- and 3-byte characters)", None),
    ("scale_utf16_ascii", "utf16_len of a 1 MiB ASCII text (UTF-8 host text to UTF-16)", None),
    ("scale_utf16_mixed", "utf16_len of a 1 MiB mixed text (UTF-8 host text to UTF-16)", None),
    ("scale_fill_i32", "fill_i32 of 10^6 elements (4 MB out)", 4000000),
    ("scale_struct_array", "struct_array of 10^5 points (800 KB in)", 800000),
]
# Calls across a process boundary (issue 17, bench-remote): ratios to the raw
# socketpair ping-pong of the same payload, measured in the same round.
REMOTE = [
    ("remote_add_i32", "add_i32 across a process boundary (8 bytes in, 4 out)"),
    ("remote_bytes_1mib", "a 1 MiB byte array in and out (touch_inout_u8: inout uint8[1048576])"),
]
FLOOR = "raw socketpair ping-pong"
REMOTE_IMPLS = [FLOOR, "raw TCP loopback ping-pong", "direct C", "marshal dynamic values", "marshal surrogate",
                "marshal serve/connect (loopback)"]
TEXT_BYTES = {"ascii": (1 << 20) // 32 * 32, "mixed": (1 << 20) // 36 * 36}  # whole units of the repeated text
SCALE_IMPLS = ["memcpy", "direct C", "marshal typed C++", "marshal dynamic values", "marshal C API"]


def scale_bytes(name, fixed):
    return fixed if fixed else TEXT_BYTES["ascii" if name.endswith("ascii") else "mixed"]


IMPLS = ["direct C", "raw libffi", "marshal typed C++", "marshal dynamic values", "marshal C API",
         "Python ctypes", "Python cffi (ABI)", "LuaJIT (JIT)", "LuaJIT (interp.)", "marshal Lua 5.4", "Koffi",
         "Mono P/Invoke", "raw thread hand-off"]


def run(cmd, label, env=None):
    print("== " + label + ": " + " ".join(cmd), flush=True)
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, timeout=3600)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        detail = getattr(e, "stderr", "") or str(e)
        print("   failed: " + detail.strip()[-2000:], flush=True)
        return None, detail.strip().splitlines()[-1] if detail.strip() else str(e)
    line = out.stdout.strip().splitlines()[-1]
    return json.loads(line), None


# Scenarios with a second thread (a native thread calling back, a cross-apartment
# hand-off): measured on every CPU the run may use, since a spinning waiter pinned
# to the one CPU its peer needs measures the scheduler, not the call.
THREADED = ("cb_thread", "proxy_call")
# Why a target was missed, from profiling (benchmarks/README.md, "Where the time
# goes"): shown next to a missed target only.
_REMOTE_COPIES = ("serve/connect has no direct channel: each call goes through Cap'n Proto RPC over TCP, where "
                  "the host's I/O thread writes the message (one more hop each way) and each side copies the 1 MiB "
                  "into and out of a fresh message segment (capnp's RPC messages cannot reference the caller's "
                  "memory safely: a failed call may return before the write ends); the surrogate's direct channel "
                  "(engine/remote/direct.hpp) avoids both")
WHY = {
    "Lua add_i32 below LuaJIT -joff and under 50 ns":
        "the scalar entry (bindings/lua/README.md) measured 37.6 ns on a quiet machine and ~51 ns at load 5 "
        "(callgrind: 787 instructions per call, from 1499): a miss here is the machine's load in that round",
    "Lua: every scenario faster than LuaJIT -joff":
        "each call pays the entry above, and records, out values and out arrays are new Lua tables per call "
        "(fields by name), where the LuaJIT driver reuses cdata it made once; utf16_len is faster (LuaJIT "
        "transcodes in Lua)",
    "Lua vec2_add faster than LuaJIT with its JIT":
        "two argument tables and a result table per call (a third of the time in Lua and its GC) and records "
        "by field name (malloc, memcmp of names); LuaJIT's JIT falls back to its interpreter here",
    "Lua call_cb faster than LuaJIT with its JIT":
        "the outer call's entry, then the callback enters Lua through lua_pcall with its arguments as Values "
        "through a std::function (Callback::run_lane, ArgLease)",
    "surrogate add_i32 within 3x of the raw socketpair ping-pong":
        "the direct channel has the floor's shape (two wake-ups per call) and measured 1.3-1.4x; a miss is "
        "a round where the caller or the surrogate waited for a CPU",
    "surrogate 1 MiB in and out within 2x of the raw socketpair ping-pong":
        "beyond the floor and the in-process call, each side decodes the bytes into a host value (two copies "
        "of 1 MiB); measured 1.8x at load 5",
    "serve/connect (loopback) 1 MiB in and out within 2x of the raw socketpair ping-pong": _REMOTE_COPIES,
}
# Issue 20's targets. Measured causes (perf on bench-calls, one scenario at a
# time with --only/--impl; benchmarks/README.md "Where the time goes").
_VALUE_PER_ELEMENT = ("one host Value (40 bytes) per element: 256 Values made and dropped per call (the C API "
                      "rewrites the reused result's list in place, still a Value per element), where Koffi and "
                      "the other peers fill a buffer the caller made; the compact out form (one native-typed "
                      "block, no Value per element, issue 20 item 3) is not built")
_C_API_HANDLES = ("every argument and result is a handle looked up in the C API's table (generation-checked, "
                  "issue 15) on top of the dynamic values' path; issue 16 (blocked) is the C API's own speed")
_DYN_PEERS = ("where a scenario is listed: out_struct: the out record is a new Record per call (field names as "
              "strings: an allocation) where Mono writes a struct in place; vec2_add: libffi's struct-by-value "
              "call (the raw libffi row itself is ~51 ns) plus records by field name, where Mono calls directly; "
              "fill_i32: " + _VALUE_PER_ELEMENT + "; out_string: a string Value made per call (the C API: a "
              "handle too); sum_f64, vtable_method, utf16_len: within a few percent (round-to-round noise decides)")
WHY.update({
    "typed C++ vec2_add within 1.20x of direct C":
        "2-3 ns over a 13 ns call: the two Vec2 are copied into the plan's argument slots and the call goes "
        "through the plan's function pointer; 1.18-1.22x across runs",
    "typed C++ vec2_add within 1.2x of direct C (issue 20)":
        "2-3 ns over a 13 ns call: the two Vec2 are copied into the plan's argument slots and the call goes "
        "through the plan's function pointer; 1.18-1.22x across runs",
    "typed C++ utf8_len within 1.20x of direct C":
        "the host string is checked (well-formed, no NUL, plain ASCII) before it is passed in place: a scan of "
        "its 64 bytes, ~1.5 ns on a 3.4 ns call; the pre-validated string view (issue 20 item 2) is not built",
    "typed C++ utf8_len within 1.2x of direct C (issue 20)":
        "the host string is checked (well-formed, no NUL, plain ASCII) before it is passed in place: a scan of "
        "its 64 bytes, ~1.5 ns on a 3.4 ns call; the pre-validated string view (issue 20 item 2) is not built",
    "typed C++ utf16_len within 1.2x of direct C (issue 20)":
        "the UTF-8 std::string is transcoded to UTF-16 per call (into the plan's stack scratch: no allocation), "
        "where direct C passes a ready UTF-16 buffer; the call goes through the plan's scalar lane by the host "
        "adapters (virtual calls per argument and result)",
    "typed C++ out_struct within 1.2x of direct C (issue 20)":
        "the Point is written in place through the caller's variable; ~1.5 ns over a 3.4 ns call (the plan's "
        "function pointer and the in-place checks)",
    "typed C++ out_string within 1.2x of direct C (issue 20)":
        "out<std::string> is written in place (no Value, no allocation once the string has room), but the "
        "string is first sized to the capacity and zeroed (the engine gives every callee a zeroed buffer), "
        "then scanned for the terminator and checked as ASCII, and the capacity is checked by the engine "
        "(in_place_count): ~18 ns over a 5 ns call that writes a stack buffer",
    "typed C++ same_apartment within 1.2x of direct C (issue 20)":
        "~2 ns over a 6 ns vtable call: the proxy-or-direct decision (is the object's apartment the caller's) "
        "on each call",
    "typed C++ call_cb within 1.2x of raw libffi (issue 20)":
        "libffi's closure, then the typed trampoline calls the C++ callable (type-erased): ~9 ns over the raw "
        "closure's ~33 ns",
    "typed C++ cb_thread within 1.2x of raw libffi (issue 20)":
        "measured, not profiled this session: a callback on a thread the engine did not make checks where it "
        "may run (its owner's apartment) on top of call_cb's trampoline cost",
    "typed C++: no allocation per call in any scenario":
        "proxy_call (the marshaled call's message and its reply) and the scale rows' mixed and UTF-16 text (a "
        "megabyte of text is beyond the lane's stack scratch: the engine's values and transcoding buffers) "
        "allocate per call",
    "dynamic values: at most one allocation per call for an out array (fill_i32)": _VALUE_PER_ELEMENT,
    "marshal dynamic values fill_i32 under Koffi": _VALUE_PER_ELEMENT,
    "marshal C API fill_i32 under Koffi": _VALUE_PER_ELEMENT,
    "marshal dynamic values call_cb below 1.5x raw libffi":
        "the registered callback's trampoline makes Values of its arguments and result and calls the host "
        "function through a std::function (Callback::run_lane): ~20 ns over the raw closure",
    "marshal C API call_cb below 1.5x raw libffi":
        "the C host function receives its arguments as marshal_value handles (made and released per "
        "callback) and returns one; " + _C_API_HANDLES,
    "marshal C API add_i32 below Koffi": _C_API_HANDLES,
    "marshal C API add_i32 below raw libffi": _C_API_HANDLES,
    "marshal C API vec2_add below 2x raw libffi":
        "libffi's struct-by-value call itself, then records as handles to record values, fields compared by "
        "name, the result record published as a handle; " + _C_API_HANDLES,
    "marshal dynamic values vec2_add below 2x raw libffi":
        "records by field name in and out around libffi's struct-by-value call",
    "marshal dynamic values: no scenario slower than Koffi, cffi, ctypes, Mono P/Invoke or LuaJIT -joff": _DYN_PEERS,
    "marshal C API: no scenario slower than Koffi, cffi, ctypes, Mono P/Invoke or LuaJIT -joff":
        "the dynamic values' causes (" + _DYN_PEERS + "), and " + _C_API_HANDLES,
    "marshal typed C++ scale_utf16_ascii: its own time within 2x of memcpy":
        "transcoding writes two bytes per ASCII byte into a new 2 MiB buffer (allocated and page-faulted per "
        "call) where memcpy copies 1 MiB",
    "marshal dynamic values scale_utf16_ascii: its own time within 2x of memcpy":
        "transcoding writes two bytes per ASCII byte into a new 2 MiB buffer (allocated and page-faulted per "
        "call) where memcpy copies 1 MiB",
    "marshal C API scale_utf16_ascii: its own time within 2x of memcpy":
        "transcoding writes two bytes per ASCII byte into a new 2 MiB buffer (allocated and page-faulted per "
        "call) where memcpy copies 1 MiB",
    "marshal dynamic values scale_utf8_ascii: its own time within 2x of memcpy":
        "the parameter is `in` without `const`: the string is validated and copied (a scan and a copy of "
        "1 MiB); with `const` it is passed in place",
    "marshal C API scale_utf8_ascii: its own time within 2x of memcpy":
        "the parameter is `in` without `const`: the string is validated and copied (a scan and a copy of "
        "1 MiB); with `const` it is passed in place",
    "marshal dynamic values scale_struct_array: its own time at memcpy speed or better":
        "the native box is copied once because the parameter is `in` without `const`: one memcpy of the same "
        "800 KB, measured at memcpy's speed within noise",
    "marshal C API scale_struct_array: its own time at memcpy speed or better":
        "the native box is copied once because the parameter is `in` without `const`: one memcpy of the same "
        "800 KB, measured at memcpy's speed within noise",
    "marshal C API scale_sum_f64: its own time at memcpy speed or better":
        "the native value is copied once (an `in` array without `const`) and the C API's checks of the 8 MB "
        "value; measured, not profiled this session",
    "marshal dynamic values scale_fill_i32: its own time at memcpy speed or better": _VALUE_PER_ELEMENT,
    "marshal C API scale_fill_i32: its own time at memcpy speed or better": _VALUE_PER_ELEMENT,
})


def drivers(missing):
    """Every implementation's command line: (label, argv, env, rename)."""
    out = []
    single = ",".join([n for n, _ in SCENARIOS if n not in THREADED] + [n for n, _, _ in SCALE])
    cpp = [BENCH, "--root", ROOT, "--json", "--iterations", str(ITER), "--repetitions", "1", "--only"]
    out.append(("C++", cpp + [single], None, None, False))
    out.append(("C++ (threaded scenarios)", cpp + [",".join(THREADED)], None, None, True))
    py = "/usr/bin/python3"
    for impl in ("ctypes", "cffi"):
        out.append((impl, [py, os.path.join(PEERS, "python_peers.py"), impl, FIXTURE, "--iterations",
                           str(max(1, ITER // 10)), "--repetitions", "1"], None, None, False))
    luajit = shutil.which("luajit")
    for label, flags in (("LuaJIT (JIT)", []), ("LuaJIT (interp.)", ["-joff"])):
        if not luajit:
            missing[label] = "luajit is not installed"
            continue
        out.append((label, [luajit] + flags + [os.path.join(PEERS, "luajit_peers.lua"), FIXTURE, str(ITER), "1", label],
                    None, None, False))
    # Lua 5.4 + marshal (bindings/lua): marshal-lua from the same build, the
    # fixture found by the typemaps' load list through LD_LIBRARY_PATH.
    marshal_lua = os.path.join(os.path.dirname(os.path.abspath(BENCH)), "..", "bindings", "lua", "marshal-lua")
    if os.path.exists(marshal_lua):
        env = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(os.path.abspath(FIXTURE)))
        out.append(("marshal Lua 5.4", [marshal_lua, os.path.join(PEERS, "marshal_lua_peers.lua"), ROOT, str(ITER), "1",
                                        "marshal Lua 5.4"], env, None, False))
    else:
        missing["marshal Lua 5.4"] = "not built (liblua5.4-dev missing): " + marshal_lua
    remote = os.path.join(os.path.dirname(os.path.abspath(BENCH)), "bench-remote")
    if os.path.exists(remote):
        # Two processes (and the surrogate's I/O thread) per call: every CPU, as the
        # threaded scenarios; the floor in the same process and the same placement.
        out.append(("remote rows (bench-remote)", [remote, "--root", ROOT, "--json", "--iterations", str(ITER), "--repetitions", "1"],
                    None, None, True))
    else:
        missing["marshal surrogate"] = "not built: " + remote
    node = shutil.which("node")
    if node and os.path.isdir(os.path.join(PEERS, "node_modules", "koffi")):
        out.append(("Koffi", [node, os.path.join(PEERS, "koffi_peers.js"), FIXTURE, str(ITER), "1"], None, "Koffi", False))
    else:
        missing["Koffi"] = "node or the koffi package is not installed (benchmarks/peers/node_modules)"
    mono = mono_driver(missing)
    if mono:
        out.append(mono)
    return out


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main():
    """Rounds: every driver once per round, pinned to one CPU (taskset), so a slow
    phase of the machine hits every implementation of a round alike; ratios are
    taken within a round, then the median over rounds is reported with its spread."""
    missing = {}
    cpus = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    one = [taskset, "-c", str(cpus[-1])] if taskset else []
    every = [taskset, "-c", ",".join(map(str, cpus))] if taskset else []
    rounds = []  # per round: {scenario: {implementation: ns}}
    allocs = {}  # {scenario: {implementation: C++ allocations per call}}
    warnings = []
    for k in range(REPS):
        load = os.getloadavg()
        print("== round %d of %d (load average %.2f %.2f %.2f)" % (k + 1, REPS, *load), flush=True)
        this = {}
        for label, cmd, env, rename, threaded in drivers(missing):
            got, why = run((every if threaded else one) + cmd, label, env=env)
            if got is None:
                if label.startswith("C++"):
                    raise SystemExit("the C++ benchmark failed: " + why)
                missing.setdefault({"ctypes": "Python ctypes", "cffi": "Python cffi (ABI)"}.get(label, label), why)
                continue
            for r in (got if isinstance(got, list) else [got]):
                impl = rename or r["implementation"]
                for name, m in r["scenarios"].items():
                    this.setdefault(name, {})[impl] = m["median"]
                    if "allocs" in m:  # C++ allocations per call: the most any round saw
                        allocs.setdefault(name, {})[impl] = max(m["allocs"], allocs.get(name, {}).get(impl, 0.0))
        rounds.append((load, this))
    scenarios, spread, ratio_ffi, ratio_c, ratio_floor = {}, {}, {}, {}, {}
    for name in {n for _, r in rounds for n in r}:
        impls = {i for _, r in rounds for i in r.get(name, {})}
        for impl in impls:
            ns = [r[name][impl] for _, r in rounds if impl in r.get(name, {})]
            scenarios.setdefault(name, {})[impl] = round(median(ns), 2)
            spread.setdefault(name, {})[impl] = [round(min(ns), 2), round(max(ns), 2)]
            for base, table in (("raw libffi", ratio_ffi), ("direct C", ratio_c), (FLOOR, ratio_floor)):
                rs = [r[name][impl] / r[name][base] for _, r in rounds
                      if impl in r.get(name, {}) and r[name].get(base)]
                if rs:
                    table.setdefault(name, {})[impl] = [round(median(rs), 3), round(min(rs), 3), round(max(rs), 3)]
        ffi = [r[name]["raw libffi"] for _, r in rounds if "raw libffi" in r.get(name, {})]
        if ffi:
            m = median(ffi)
            for k, (load, r) in enumerate(rounds):
                v = r.get(name, {}).get("raw libffi")
                if v is not None and abs(v - m) > 0.2 * m:
                    warnings.append("round %d: raw libffi %s %.1f ns is %+.0f%% from the median %.1f ns (load %.2f)"
                                    % (k + 1, name, v, 100 * (v - m) / m, m, load[0]))
    for w in warnings:
        print("warning: " + w, flush=True)
    machine = {
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "cores": os.cpu_count(),
        "system": platform.platform(),
        "iterations": ITER,
        "repetitions": REPS,
        "rounds": REPS,
        "statistic": "median over rounds of ns per call (every driver once per round, pinned to one CPU); "
                     "spread = [min, max] over rounds; ratios taken within each round, then their median",
        "load": [round(l[0], 2) for l, _ in rounds],
    }
    result = {"machine": machine, "scenarios": scenarios, "spread": spread, "ratio_to_raw_libffi": ratio_ffi,
              "ratio_to_direct_c": ratio_c, "ratio_to_raw_socketpair": ratio_floor, "warnings": warnings, "missing": missing,
              "allocations_per_call": allocs}
    bench_dir = os.path.join(ROOT, "benchmarks")
    with open(os.path.join(bench_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    write_markdown(result, os.path.join(bench_dir, "results.md"))
    write_svg(result, os.path.join(bench_dir, "results.svg"))
    if not QUICK:  # the README shows the last full run
        write_readme_table(result, os.path.join(ROOT, "README.md"))
    print(open(os.path.join(bench_dir, "results.md")).read())


def mono_driver(missing):
    """The .NET marshaler: mono_peers.cs built (once) with mcs -optimize+ next to the
    C++ benchmark binary, the fixture found by its DllImport name through LD_LIBRARY_PATH."""
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if not mcs or not mono:
        missing["Mono P/Invoke"] = "mono-mcs is not installed (apt-get install --no-install-recommends mono-mcs)"
        return None
    exe = os.path.join(os.path.dirname(os.path.abspath(BENCH)), "mono_peers.exe")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(os.path.join(PEERS, "mono_peers.cs")):
        built, why = build_mono(mcs, exe)
        if not built:
            missing["Mono P/Invoke"] = why
            return None
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(os.path.abspath(FIXTURE)))
    return ("Mono P/Invoke", [mono, exe, str(ITER), "1"], env, None, False)


def build_mono(mcs, exe):
    cmd = [mcs, "-optimize+", "-out:" + exe, os.path.join(PEERS, "mono_peers.cs")]
    print("== Mono build: " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return False, "mcs failed: " + (done.stdout + done.stderr).strip()[-500:]
    return True, None


def fmt(x):
    return "" if x is None else ("%.1f" % x if x < 1000 else "%.0f" % x)


def targets(r):
    """Each target of the issue: (text, met, detail)."""
    out = []
    r_all = r
    s = r["scenarios"]
    within = {"raw libffi": r.get("ratio_to_raw_libffi", {}), "direct C": r.get("ratio_to_direct_c", {}),
              FLOOR: r.get("ratio_to_raw_socketpair", {})}

    def get(sc, impl):
        return s.get(sc, {}).get(impl)

    def ratio(sc, a, b):
        if b in within and a in within[b].get(sc, {}):
            return within[b][sc][a][0]  # the median of the ratios taken within each round
        x, y = get(sc, a), get(sc, b)
        return None if x is None or y is None else x / y

    for sc, bound in (("add_i32", 1.2), ("vec2_add", 1.2), ("utf8_len", 1.2), ("sum_f64", 1.05)):
        r = ratio(sc, "marshal typed C++", "direct C")
        out.append(("typed C++ %s within %.2fx of direct C" % (sc, bound), r is not None and r <= bound,
                    "%.2fx" % r if r is not None else "not measured"))
    # Issue 20: typed C++ within 1.2x of direct C in every scenario (the
    # callbacks within 1.2x of a raw libffi closure, fill_i32 within 1.3x).
    for sc, _ in SCENARIOS:
        if sc == "proxy_call" or get(sc, "marshal typed C++") is None:  # proxy_call: its own target
            continue
        base, bound = ("raw libffi", 1.2) if sc in ("call_cb", "cb_thread") else ("direct C", 1.3 if sc == "fill_i32" else 1.2)
        r = ratio(sc, "marshal typed C++", base)
        out.append(("typed C++ %s within %.1fx of %s (issue 20)" % (sc, bound, base), r is not None and r <= bound,
                    "%.2fx" % r if r is not None else "not measured"))
    for impl in ("marshal dynamic values", "marshal C API"):
        r = ratio("fill_i32", impl, "Koffi")
        out.append(("%s fill_i32 under Koffi" % impl, r is not None and r < 1, "%.2fx" % r if r is not None else "not measured"))
    # Allocations per call (operator new, counted by bench-calls).
    al = r_all.get("allocations_per_call", {})
    typed = sorted((sc, a[ "marshal typed C++"]) for sc, a in al.items() if "marshal typed C++" in a)
    heavy = ["%s %.2f" % (sc, n) for sc, n in typed if round(n) > 0]
    out.append(("typed C++: no allocation per call in any scenario", bool(typed) and not heavy,
                ("; ".join(heavy) if heavy else "0 in every scenario (at most %.3f: setup spread over the calls)"
                 % max(n for _, n in typed)) if typed else "not measured"))
    n = al.get("fill_i32", {}).get("marshal dynamic values")
    out.append(("dynamic values: at most one allocation per call for an out array (fill_i32)", n is not None and round(n) <= 1,
                "%.2f per call" % n if n is not None else "not measured"))
    for impl in ("marshal dynamic values", "marshal C API"):
        for other in ("Koffi", "raw libffi"):
            r = ratio("add_i32", impl, other)
            out.append(("%s add_i32 below %s" % (impl, other), r is not None and r < 1,
                        "%.2fx" % r if r is not None else "not measured"))
        r = ratio("vec2_add", impl, "raw libffi")
        out.append(("%s vec2_add below 2x raw libffi" % impl, r is not None and r < 2, "%.2fx" % r if r else "not measured"))
        r = ratio("call_cb", impl, "raw libffi")
        out.append(("%s call_cb below 1.5x raw libffi" % impl, r is not None and r < 1.5, "%.2fx" % r if r else "not measured"))
        slower = []
        for sc in s:
            mine = get(sc, impl)
            for peer in ("Koffi", "Python cffi (ABI)", "Python ctypes", "Mono P/Invoke", "LuaJIT (interp.)"):
                theirs = get(sc, peer)
                if mine is not None and theirs is not None and mine > theirs:
                    slower.append("%s: %s %.0f ns > %s %.0f ns" % (sc, impl, mine, peer, theirs))
        out.append(("%s: no scenario slower than Koffi, cffi, ctypes, Mono P/Invoke or LuaJIT -joff" % impl, not slower,
                    "; ".join(slower) or "none"))
    # Scale targets judge what marshal adds to the call: its time minus direct C's
    # (the callee's own work, the same native code either way), against memcpy
    # of the same bytes; the transcoding speed is the text's bytes over that time.
    def own(sc, impl):
        v, d, m = get(sc, impl), get(sc, "direct C"), get(sc, "memcpy")
        if v is None or d is None or not m:
            return None
        return max(v - d, 0.0) / m
    for impl in ("marshal typed C++", "marshal dynamic values", "marshal C API"):
        for sc in ("scale_sum_f64", "scale_struct_array", "scale_fill_i32"):
            x, total = own(sc, impl), ratio(sc, impl, "memcpy")
            out.append(("%s %s: its own time at memcpy speed or better" % (impl, sc), x is not None and x <= 1,
                        "%.2fx memcpy (the whole call %.2fx)" % (x, total) if x is not None else "not measured"))
        v, d = get("scale_utf16_mixed", impl), get("scale_utf16_mixed", "direct C")
        gbs = TEXT_BYTES["mixed"] / (v - d) if v is not None and d is not None and v > d else None
        out.append(("%s UTF-8 to UTF-16 at 1.5 GB/s or better (mixed text; its own time)" % impl,
                    v is not None and d is not None and (gbs is None or gbs >= 1.5),
                    "%.2f GB/s" % gbs if gbs else ("no time beyond direct C" if v is not None and d is not None else "not measured")))
        for sc in ("scale_utf8_ascii", "scale_utf16_ascii"):
            x, total = own(sc, impl), ratio(sc, impl, "memcpy")
            out.append(("%s %s: its own time within 2x of memcpy" % (impl, sc), x is not None and x <= 2,
                        "%.2fx memcpy (the whole call %.2fx)" % (x, total) if x is not None else "not measured"))
    # Lua 5.4 + marshal (issue 18) against LuaJIT's FFI.
    lua = "marshal Lua 5.4"
    x, joff = get("add_i32", lua), get("add_i32", "LuaJIT (interp.)")
    out.append(("Lua add_i32 below LuaJIT -joff and under 50 ns", x is not None and joff is not None and x < joff and x < 50,
                "%.1f ns (LuaJIT -joff %s ns)" % (x, fmt(joff)) if x is not None else "not measured"))
    slower = []
    for sc in s:
        mine, theirs = get(sc, lua), get(sc, "LuaJIT (interp.)")
        if mine is not None and theirs is not None and mine >= theirs:
            slower.append("%s: %.0f ns >= %.0f ns" % (sc, mine, theirs))
    out.append(("Lua: every scenario faster than LuaJIT -joff", get("add_i32", lua) is not None and not slower,
                "; ".join(slower) or ("none" if get("add_i32", lua) is not None else "not measured")))
    for sc in ("vec2_add", "call_cb"):
        x = ratio(sc, lua, "LuaJIT (JIT)")
        out.append(("Lua %s faster than LuaJIT with its JIT" % sc, x is not None and x < 1,
                    "%.2fx" % x if x is not None else "not measured"))
    # Across a process boundary (issue 17), against the raw socketpair ping-pong.
    for impl, sc, bound, what in (("marshal surrogate", "remote_add_i32", 3, "add_i32"),
                                  ("marshal surrogate", "remote_bytes_1mib", 2, "1 MiB in and out"),
                                  ("marshal serve/connect (loopback)", "remote_bytes_1mib", 2, "1 MiB in and out")):
        x = ratio(sc, impl, FLOOR)
        out.append(("%s %s within %dx of the raw socketpair ping-pong" % (impl.replace("marshal ", ""), what, bound),
                    x is not None and x <= bound, "%.2fx" % x if x is not None else "not measured"))
    r = ratio("proxy_call", "marshal typed C++", "raw thread hand-off")
    out.append(("typed C++ proxy_call within 2x of the raw thread hand-off", r is not None and r <= 2,
                "%.2fx" % r if r is not None else "not measured"))
    return out


def write_markdown(r, path):
    s = r["scenarios"]
    lines = ["# Benchmark results", "",
             "`./run bench` on %s cores, %s (%s). %s; %d repetitions." % (
                 r["machine"]["cores"], r["machine"]["cpu"], r["machine"]["system"], r["machine"]["statistic"],
                 r["machine"]["repetitions"]), "",
             "Every figure in one run; ratios are to a direct C call and to raw libffi (a prepared CIF) of the same "
             "scenario. An empty cell: the implementation cannot do that scenario (see the notes).", ""]
    for name, title in SCENARIOS:
        row = s.get(name)
        if not row:
            continue
        direct, ffi = row.get("direct C"), row.get("raw libffi")
        lines += ["## " + title, "", "| implementation | ns/call | spread (min-max) | x direct C | x raw libffi "
                  "(spread over rounds) |", "|---|---:|---:|---:|---:|"]
        for impl in IMPLS:
            if impl not in row:
                continue
            v = row[impl]
            lo, hi = r["spread"][name][impl]
            rc = r.get("ratio_to_direct_c", {}).get(name, {}).get(impl)
            rf = r.get("ratio_to_raw_libffi", {}).get(name, {}).get(impl)
            lines.append("| %s | %s | %s-%s | %s | %s |" % (
                impl, fmt(v), fmt(lo), fmt(hi),
                "%.2f" % rc[0] if rc else ("%.2f" % (v / direct) if direct else ""),
                "%.2f (%.2f-%.2f)" % tuple(rf) if rf else ("%.2f" % (v / ffi) if ffi else "")))
        lines.append("")
    lines += ["## Scale rows: bytes per second", "",
              "GB/s of the scenario's bytes (1 GB = 10^9 bytes), the ratio of time to memcpy of the same bytes "
              "in the same run (below 1: faster than copying them once), and marshal's own time (its time minus "
              "direct C's: the callee's work is the same native code either way) as a ratio to memcpy: what the "
              "targets judge.", ""]
    for name, title, fixed in SCALE:
        row = s.get(name)
        if not row:
            continue
        nbytes = scale_bytes(name, fixed)
        lines += ["### " + title, "", "| implementation | GB/s | ns/call | x memcpy | own time x memcpy |",
                  "|---|---:|---:|---:|---:|"]
        for impl in SCALE_IMPLS:
            if impl in row:
                v = row[impl]
                mine = impl.startswith("marshal") and row.get("memcpy") and row.get("direct C") is not None
                lines.append("| %s | %.2f | %s | %s | %s |" % (
                    impl, nbytes / v, fmt(v), "%.2f" % (v / row["memcpy"]) if row.get("memcpy") else "",
                    "%.2f" % (max(v - row["direct C"], 0.0) / row["memcpy"]) if mine else ""))
        lines.append("")
    lines += ["## Across a process boundary (issue 17)", "",
              "Microseconds per call, and the ratio to the floor measured in the same round: a raw ping-pong of the "
              "same payload over a socketpair with a forked echo process (add_i32: 8 bytes there, 4 back, one round "
              "trip; 1 MiB: two copies, 1 MiB there and 1 MiB back). direct C and dynamic values are the same "
              "call in-process (no boundary); the surrogate is the typemap's library in `marshal-surrogate` "
              "(`\"isolate\": \"process\"`); serve/connect is `marshal serve` on 127.0.0.1 and a client "
              "connected to it (its own floor: the raw TCP loopback ping-pong).", ""]
    for name, title in REMOTE:
        row = s.get(name)
        if not row:
            continue
        lines += ["### " + title, "", "| implementation | us/call | spread (min-max) | x raw socketpair "
                  "(spread over rounds) |", "|---|---:|---:|---:|"]
        for impl in REMOTE_IMPLS:
            if impl not in row:
                continue
            lo, hi = r["spread"][name][impl]
            rf = r.get("ratio_to_raw_socketpair", {}).get(name, {}).get(impl)
            lines.append("| %s | %s | %s-%s | %s |" % (impl, "%.3f" % (row[impl] / 1000), "%.3f" % (lo / 1000),
                                                       "%.3f" % (hi / 1000), "%.2f (%.2f-%.2f)" % tuple(rf) if rf else ""))
        lines.append("")
    al = r.get("allocations_per_call", {})
    if al:
        cols = ["marshal typed C++", "marshal dynamic values", "marshal C API"]
        lines += ["## Allocations per call", "",
                  "C++ allocations (operator new, the engine's included) per call, counted by bench-calls over "
                  "1000 calls after each row's timing (fewer for the scale rows, whose setup is then spread over "
                  "fewer calls); the most any round saw. C-level malloc is not counted.", "",
                  "| scenario | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for name in [n for n, _ in SCENARIOS] + [n for n, _, _ in SCALE]:
            if name in al and any(c in al[name] for c in cols):
                lines.append("| %s | %s |" % (name, " | ".join("%.2f" % al[name][c] if c in al[name] else ""
                                                               for c in cols)))
        lines.append("")
    lines += ["## Targets (from the benchmarks issue), as measured in this run", "",
              "| target | met | measured | why missed |", "|---|---|---|---|"]
    for text, met, detail in targets(r):
        if not met and text not in WHY:
            print("warning: no reason recorded for the missed target: " + text, flush=True)
        lines.append("| %s | %s | %s | %s |" % (text, "yes" if met else "**no**", detail,
                                                "" if met else WHY.get(text, "(no reason recorded)")))
    lines += ["", "## Notes", "",
              "- Missing peers: " + (", ".join("%s (%s)" % kv for kv in r["missing"].items()) or "none") + ".",
              "- Rounds: %d, load average at each round's start: %s. Warnings (a round's raw libffi figure more "
              "than 20%% from its median): %s." % (r["machine"]["rounds"], ", ".join("%.2f" % l for l in
                                                                                      r["machine"]["load"]),
                                                   "; ".join(r["warnings"]) or "none"),
              "- raw thread hand-off (proxy_call only): the floor of a cross-apartment call, two threads handing "
              "a vtable call over with an apartment's wait strategy (spin with pause, then a futex), nothing "
              "marshaled.",
              "- cb_thread and proxy_call (a second thread) run on every CPU of the run in marshal's and raw "
              "libffi's rows, and so do the rows across a process boundary (bench-remote: the caller, the "
              "surrogate's I/O thread and the other process; the raw ping-pong floors placed alike); every other "
              "scenario, and every peer driver, runs pinned to one CPU.",
              "- The Lua 5.4 + marshal row is a Lua script (benchmarks/peers/marshal_lua_peers.lua) run by "
              "build/bindings/lua/marshal-lua, the scenarios of the LuaJIT driver written as a Lua user writes "
              "them with marshal: structs as tables, strings as Lua strings, arrays as native memory boxes "
              "(fx:new), a callback registered once (lib:callback), out values as extra returns; timed with "
              "CLOCK_MONOTONIC (libc's clock_gettime through marshal), as LuaJIT's driver times itself.",
              "- Not applicable: LuaJIT cannot take a callback from a foreign thread (its VM is single-threaded); "
              "a synchronous callback from a native thread would block Node's only JavaScript thread (Koffi); "
              "the cross-apartment call exists only in marshal.",
              "- How each implementation passes data: every implementation gets what its users would write. "
              "Arrays (sum_f64, struct_array) are native memory in every peer driver (a ctypes array, cffi's "
              "ffi.new, a LuaJIT cdata array; Koffi takes a Float64Array and, for struct_array, JavaScript "
              "objects); marshal's dynamic values and C API pass host-owned native memory too (a NativeBox, "
              "marshal_value_create_native), copied once because the parameter is `in`. Callbacks (call_cb, cb_thread) "
              "are made once in every driver (koffi.register, a CFUNCTYPE object, ffi.callback) and registered "
              "once in marshal's dynamic values and C API (Library::callback, marshal_value_create_callback); the "
              "typed C++ row passes a marshal::callback; Mono passes a delegate kept alive in a static field. Out arrays (fill_i32) and out strings come back as host "
              "values in marshal (a list of 256 values, a string); the peers fill a buffer the caller made. "
              "Mono P/Invoke uses the declarations a C# author writes, the marshaler doing the work: "
              "[In] double[] and [In] Point[] (pinned, no copy), LPUTF8Str and LPWStr strings (converted per "
              "call), a sequential struct by value, [Out] int[], out Point, a StringBuilder buffer, and the "
              "vtable slot through Marshal.GetDelegateForFunctionPointer; built with mcs -optimize+.",
              "- The C API rows reuse one result and change argument values in place "
              "(marshal_function_call_into, marshal_value_set_int64): no allocation per call for scalars.",
              "- Missed targets stay visible with their reason in the README's benchmark section and the issue notes.", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


SHORT = ["C", "libffi", "typed C++", "dynamic", "C API", "ctypes", "cffi", "LuaJIT", "LuaJIT -joff", "Lua 5.4 + marshal",
         "Koffi", "Mono", "hand-off"]
BEGIN, END = "<!-- bench-table: written by benchmarks/run_all.py -->", "<!-- /bench-table -->"


def write_readme_table(r, path):
    """Replaces the table between the README's markers with this run's figures."""
    text = open(path).read()
    if BEGIN not in text or END not in text:
        print("README.md has no benchmark table markers; not updated", flush=True)
        return
    s = r["scenarios"]
    rows = ["| ns per call | " + " | ".join(SHORT) + " |", "|---|" + "---:|" * len(SHORT)]
    for name, _ in SCENARIOS:
        if name in s:
            rows.append("| %s | %s |" % (name, " | ".join(fmt(s[name].get(i)) for i in IMPLS)))
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + BEGIN + "\n" + "\n".join(rows) + "\n" + END + tail)


def write_svg(r, path):
    """A horizontal bar chart: each scenario, each implementation, log10 of the ratio to direct C."""
    import math
    s = r["scenarios"]
    colors = {"direct C": "#444444", "raw libffi": "#888888", "marshal typed C++": "#1b7837",
              "marshal dynamic values": "#5aae61", "marshal C API": "#a6dba0", "Python ctypes": "#2166ac",
              "Python cffi (ABI)": "#67a9cf", "LuaJIT (JIT)": "#b2182b", "LuaJIT (interp.)": "#ef8a62",
              "marshal Lua 5.4": "#d6604d", "Koffi": "#762a83", "Mono P/Invoke": "#e08214", "raw thread hand-off": "#bbbbbb",
              FLOOR: "#cccccc", "raw TCP loopback ping-pong": "#dddddd", "marshal surrogate": "#00441b",
              "marshal serve/connect (loopback)": "#4d9221"}
    impls = IMPLS + [i for i in REMOTE_IMPLS if i not in IMPLS]
    names = [n for n, _ in SCENARIOS + REMOTE if n in s and "direct C" in s[n]]
    bar, gap, left, width = 9, 14, 190, 560
    rows = sum(len([i for i in impls if i in s[n]]) for n in names)
    height = 60 + rows * bar + len(names) * gap + 40
    maxlog = max(math.log10(max(s[n][i] / s[n]["direct C"], 1)) for n in names for i in s[n]) or 1
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="10">'
           % (left + width + 200, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="20" font-size="14">ns per call as a multiple of a direct C call (log scale), one run</text>']
    for k in range(0, int(math.ceil(maxlog)) + 1):
        x = left + width * k / max(maxlog, 1e-9)
        if x > left + width + 1:
            break
        out.append('<line x1="%.1f" y1="35" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x, x, height - 30))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%dx</text>' % (x, height - 15, 10 ** k))
    y = 45
    for n in names:
        out.append('<text x="10" y="%d" font-weight="bold">%s</text>' % (y + bar, n))
        for impl in impls:
            if impl not in s[n]:
                continue
            ratio = s[n][impl] / s[n]["direct C"]
            w = max(1.0, width * math.log10(max(ratio, 1)) / max(maxlog, 1e-9))
            out.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s %s: %.1f ns (%.2fx)</title></rect>'
                       % (left, y, w, bar - 1, colors[impl], n, impl, s[n][impl], ratio))
            y += bar
        y += gap
    ly = 45
    for impl in impls:
        out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>'
                   % (left + width + 20, ly, colors[impl], left + width + 35, ly + 9, impl))
        ly += 16
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
