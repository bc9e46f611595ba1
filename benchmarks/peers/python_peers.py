#!/usr/bin/python3
"""marshal benchmarks: the Python peers (ctypes and cffi in ABI mode).

Usage: python_peers.py ctypes|cffi LIBRARY [--iterations N] [--repetitions R]
Prints one JSON object: {"implementation": NAME, "scenarios": {SCENARIO:
{"median": ns, "min": ns, "max": ns}}}. Every scenario checks its result once,
then consumes every result of the timed loop (so nothing is optimized away).
"""
import json
import statistics
import sys
import threading
import time


def measure(body, iterations, reps):
    body(max(1, iterations // 20))  # warm up
    ns = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        body(iterations)
        ns.append((time.perf_counter_ns() - t0) / iterations)
    return {"median": statistics.median(ns), "min": min(ns), "max": max(ns)}


def expect(ok, what):
    if not ok:
        raise SystemExit("wrong result: " + what)


TEXT64 = "marshal: P/Invoke for any host. " * 2  # 64 bytes of UTF-8
TEXT16 = "héllo wörld, ∑ UTF-16 text here"  # 31 UTF-16 units


def ctypes_scenarios(path):
    import ctypes as C
    lib = C.CDLL(path)

    class Vec2(C.Structure):
        _fields_ = [("x", C.c_double), ("y", C.c_double)]

    class Point(C.Structure):
        _fields_ = [("x", C.c_int32), ("y", C.c_int32)]

    add = lib.add_i32
    add.argtypes, add.restype = [C.c_int32, C.c_int32], C.c_int32
    sum_f64 = lib.sum_in_f64_array
    sum_f64.argtypes, sum_f64.restype = [C.POINTER(C.c_double), C.c_size_t], C.c_double
    utf8 = lib.len_in_utf8
    utf8.argtypes, utf8.restype = [C.c_char_p], C.c_size_t
    utf16 = lib.len_in_utf16
    utf16.argtypes, utf16.restype = [C.c_void_p], C.c_size_t
    vec = lib.add_vec2
    vec.argtypes, vec.restype = [Vec2, Vec2], Vec2
    fill = lib.fill_out_i32_array
    fill.argtypes, fill.restype = [C.POINTER(C.c_int32), C.c_size_t], None
    IntFn = C.CFUNCTYPE(C.c_int32, C.c_int32)
    apply = lib.apply_i32
    apply.argtypes, apply.restype = [IntFn, C.c_int32], C.c_int32
    get_point = lib.get_out_point
    get_point.argtypes, get_point.restype = [C.POINTER(Point), C.c_int32, C.c_int32], None
    reverse = lib.reverse_out_utf8
    reverse.argtypes, reverse.restype = [C.c_char_p, C.c_char_p, C.c_size_t], C.c_size_t
    points = lib.sum_in_point_array
    points.argtypes, points.restype = [C.POINTER(Point), C.c_size_t], C.c_int64
    threads = lib.call_from_threads
    threads.argtypes, threads.restype = [IntFn, C.c_int32, C.c_int32], C.c_int64
    create = lib.counter_create
    create.argtypes, create.restype = [C.c_int32], C.c_void_p

    data = (C.c_double * 1000)(*[float(i) for i in range(1000)])
    out = (C.c_int32 * 256)()
    pts = (Point * 100)(*[Point(i, -i) for i in range(100)])
    plus_one = IntFn(lambda v: v + 1)
    obj = create(0)
    vtbl = C.cast(obj, C.POINTER(C.POINTER(C.c_void_p))).contents
    AddFn = C.CFUNCTYPE(C.c_int32, C.c_void_p, C.c_int32)
    method = AddFn(vtbl[3])
    release = C.CFUNCTYPE(C.c_uint32, C.c_void_p)(vtbl[2])

    expect(add(1, 2) == 3, "add_i32")
    expect(sum_f64(data, 1000) == 499500.0, "sum_f64")
    expect(utf8(TEXT64.encode()) == 64, "utf8_len")
    r = vec(Vec2(1, 2), Vec2(3, 4))
    expect(r.x == 4 and r.y == 6, "vec2_add")
    fill(out, 256)
    expect(out[255] == 255 * 255 - 3, "fill_i32")
    expect(apply(plus_one, 41) == 42, "call_cb")
    enc16 = TEXT16.encode("utf-16-le") + b"\0\0"
    expect(utf16(enc16) == len(enc16) // 2 - 1, "utf16_len")
    p = Point()
    get_point(C.byref(p), 3, 4)
    expect(p.x == 3 and p.y == 4, "out_struct")
    buf = C.create_string_buffer(64)
    expect(reverse(b"marshal", buf, 64) == 7 and buf.value == b"lahsram", "out_string")
    expect(points(pts, 100) == sum(i * 10 - i for i in range(100)), "struct_array")
    expect(method(obj, 1) == 1, "vtable_method")
    expect(threads(plus_one, 1, 10) == sum(range(1, 11)), "cb_thread")

    s = {}
    s["add_i32"] = lambda n: [add(i & 0xffff, 3) for i in range(n)]
    s["sum_f64"] = lambda n: [sum_f64(data, 1000) for _ in range(n)]
    s["utf8_len"] = lambda n: [utf8(TEXT64.encode()) for _ in range(n)]
    s["vec2_add"] = lambda n: [vec(Vec2(i, 1), Vec2(2, 3)).x for i in range(n)]
    s["fill_i32"] = lambda n: [fill(out, 256) or out[5] for _ in range(n)]
    s["call_cb"] = lambda n: [apply(plus_one, i & 0xffff) for i in range(n)]
    s["utf16_len"] = lambda n: [utf16(TEXT16.encode("utf-16-le") + b"\0\0") for _ in range(n)]
    s["out_struct"] = lambda n: [(get_point(C.byref(p), i & 0xffff, 1), p.x)[1] for i in range(n)]
    s["out_string"] = lambda n: [(reverse(b"marshal", buf, 64), buf.value)[1] for _ in range(n)]
    s["struct_array"] = lambda n: [points(pts, 100) for _ in range(n)]
    s["vtable_method"] = lambda n: [method(obj, 1) for _ in range(n)]
    s["cb_thread"] = lambda n: threads(plus_one, 1, n)
    return s, lambda: release(obj)


def cffi_scenarios(path):
    from cffi import FFI
    ffi = FFI()
    ffi.cdef("""
        typedef struct { double x, y; } Vec2;
        typedef struct { int32_t x, y; } Point;
        int32_t add_i32(int32_t, int32_t);
        double sum_in_f64_array(const double *, size_t);
        size_t len_in_utf8(const char *);
        size_t len_in_utf16(const uint16_t *);
        Vec2 add_vec2(Vec2, Vec2);
        void fill_out_i32_array(int32_t *, size_t);
        int32_t apply_i32(int32_t (*)(int32_t), int32_t);
        void get_out_point(Point *, int32_t, int32_t);
        size_t reverse_out_utf8(const char *, char *, size_t);
        int64_t sum_in_point_array(const Point *, size_t);
        int64_t call_from_threads(int32_t (*)(int32_t), int32_t, int32_t);
        void *counter_create(int32_t);
    """)
    lib = ffi.dlopen(path)
    data = ffi.new("double[1000]", [float(i) for i in range(1000)])
    out = ffi.new("int32_t[256]")
    pts = ffi.new("Point[100]", [(i, -i) for i in range(100)])
    p = ffi.new("Point *")
    buf = ffi.new("char[64]")

    @ffi.callback("int32_t(int32_t)")
    def plus_one(v):
        return v + 1

    obj = lib.counter_create(0)
    vtbl = ffi.cast("void ***", obj)[0]
    method = ffi.cast("int32_t(*)(void *, int32_t)", vtbl[3])
    release = ffi.cast("uint32_t(*)(void *)", vtbl[2])
    a, b = ffi.new("Vec2 *", (1, 2))[0], ffi.new("Vec2 *", (3, 4))[0]

    expect(lib.add_i32(1, 2) == 3, "add_i32")
    expect(lib.sum_in_f64_array(data, 1000) == 499500.0, "sum_f64")
    expect(lib.len_in_utf8(TEXT64.encode()) == 64, "utf8_len")
    r = lib.add_vec2(a, b)
    expect(r.x == 4 and r.y == 6, "vec2_add")
    lib.fill_out_i32_array(out, 256)
    expect(out[255] == 255 * 255 - 3, "fill_i32")
    expect(lib.apply_i32(plus_one, 41) == 42, "call_cb")
    enc16 = TEXT16.encode("utf-16-le") + b"\0\0"
    expect(lib.len_in_utf16(ffi.from_buffer("uint16_t[]", enc16)) == len(enc16) // 2 - 1, "utf16_len")
    lib.get_out_point(p, 3, 4)
    expect(p.x == 3 and p.y == 4, "out_struct")
    expect(lib.reverse_out_utf8(b"marshal", buf, 64) == 7 and ffi.string(buf) == b"lahsram", "out_string")
    expect(lib.sum_in_point_array(pts, 100) == sum(i * 10 - i for i in range(100)), "struct_array")
    expect(method(obj, 1) == 1, "vtable_method")
    expect(lib.call_from_threads(plus_one, 1, 10) == sum(range(1, 11)), "cb_thread")

    def vec2(i):
        return lib.add_vec2(ffi.new("Vec2 *", (i, 1))[0], ffi.new("Vec2 *", (2, 3))[0]).x

    s = {}
    s["add_i32"] = lambda n: [lib.add_i32(i & 0xffff, 3) for i in range(n)]
    s["sum_f64"] = lambda n: [lib.sum_in_f64_array(data, 1000) for _ in range(n)]
    s["utf8_len"] = lambda n: [lib.len_in_utf8(TEXT64.encode()) for _ in range(n)]
    s["vec2_add"] = lambda n: [vec2(i) for i in range(n)]
    s["fill_i32"] = lambda n: [lib.fill_out_i32_array(out, 256) or out[5] for _ in range(n)]
    s["call_cb"] = lambda n: [lib.apply_i32(plus_one, i & 0xffff) for i in range(n)]
    s["utf16_len"] = lambda n: [lib.len_in_utf16(ffi.from_buffer("uint16_t[]", TEXT16.encode("utf-16-le") + b"\0\0"))
                                for _ in range(n)]
    s["out_struct"] = lambda n: [(lib.get_out_point(p, i & 0xffff, 1), p.x)[1] for i in range(n)]
    s["out_string"] = lambda n: [(lib.reverse_out_utf8(b"marshal", buf, 64), ffi.string(buf))[1] for _ in range(n)]
    s["struct_array"] = lambda n: [lib.sum_in_point_array(pts, 100) for _ in range(n)]
    s["vtable_method"] = lambda n: [method(obj, 1) for _ in range(n)]
    s["cb_thread"] = lambda n: lib.call_from_threads(plus_one, 1, n)
    return s, lambda: release(obj)


def main():
    impl, path = sys.argv[1], sys.argv[2]
    iterations, reps = 200000, 5
    args = sys.argv[3:]
    for i, a in enumerate(args):
        if a == "--iterations":
            iterations = int(args[i + 1])
        if a == "--repetitions":
            reps = int(args[i + 1])
    scenarios, done = (ctypes_scenarios if impl == "ctypes" else cffi_scenarios)(path)
    heavy = {"sum_f64": 10, "struct_array": 4, "fill_i32": 2}
    results = {}
    for name, body in scenarios.items():
        results[name] = measure(body, max(1, iterations // heavy.get(name, 1)), reps)
    done()
    label = {"ctypes": "Python ctypes", "cffi": "Python cffi (ABI)"}[impl]
    print(json.dumps({"implementation": label, "scenarios": results}))


if __name__ == "__main__":
    main()
