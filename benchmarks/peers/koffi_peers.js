// marshal benchmarks: the Koffi peer (Node.js).
// Usage: node koffi_peers.js LIBRARY ITERATIONS REPETITIONS
// Prints one JSON object like the other peers. Every scenario checks its
// result once, then consumes every result of the timed loop. A synchronous
// callback from a foreign thread would block Node's only JS thread: not run.
'use strict';
const koffi = require('koffi');
const [path, itArg, repArg] = process.argv.slice(2);
const iterations = Number(itArg || 1000000);
const reps = Number(repArg || 5);
const lib = koffi.load(path);

const Vec2 = koffi.struct('Vec2', { x: 'double', y: 'double' });
const Point = koffi.struct('Point', { x: 'int32_t', y: 'int32_t' });
const IntFn = koffi.proto('int32_t IntFn(int32_t)');
const AddFn = koffi.proto('int32_t AddFn(void *self, int32_t by)');
const ReleaseFn = koffi.proto('uint32_t ReleaseFn(void *self)');

const add = lib.func('int32_t add_i32(int32_t, int32_t)');
const sumF64 = lib.func('double sum_in_f64_array(const double *, size_t)');
const utf8 = lib.func('size_t len_in_utf8(const char *)');
const utf16 = lib.func('size_t len_in_utf16(const char16_t *)');
const vec = lib.func('Vec2 add_vec2(Vec2, Vec2)');
const fill = lib.func('void fill_out_i32_array(_Out_ int32_t *, size_t)');
const apply = lib.func('int32_t apply_i32(IntFn *, int32_t)');
const getPoint = lib.func('void get_out_point(_Out_ Point *, int32_t, int32_t)');
const reverse = lib.func('size_t reverse_out_utf8(const char *, _Out_ uint8_t *, size_t)');
const points = lib.func('int64_t sum_in_point_array(const Point *, size_t)');
const create = lib.func('void *counter_create(int32_t)');

let sink = 0;
function measure(body, n) {
  body(Math.max(1, Math.floor(n / 20)));
  const ns = [];
  for (let r = 0; r < reps; ++r) {
    const t0 = process.hrtime.bigint();
    body(n);
    ns.push(Number(process.hrtime.bigint() - t0) / n);
  }
  ns.sort((a, b) => a - b);
  return { median: ns[Math.floor(ns.length / 2)], min: ns[0], max: ns[ns.length - 1] };
}
function expect(ok, what) { if (!ok) throw new Error('wrong result: ' + what); }

const text64 = 'marshal: P/Invoke for any host. '.repeat(2);
const text16 = 'héllo wörld, ∑ UTF-16 text here';
const data = new Float64Array(1000).map((_, i) => i);
const out = new Int32Array(256);
const pts = Array.from({ length: 100 }, (_, i) => ({ x: i, y: -i }));
const plusOne = koffi.register((v) => v + 1, koffi.pointer(IntFn));
const obj = create(0);
const vtbl = koffi.decode(obj, 'void *');
const slots = koffi.decode(vtbl, 'void *', 4);
const method = koffi.decode(slots[3], AddFn);
const release = koffi.decode(slots[2], ReleaseFn);
const p = {};
const buf = Buffer.alloc(64);

expect(add(1, 2) === 3, 'add_i32');
expect(sumF64(data, 1000) === 499500, 'sum_f64');
expect(Number(utf8(text64)) === 64, 'utf8_len');
const r = vec({ x: 1, y: 2 }, { x: 3, y: 4 });
expect(r.x === 4 && r.y === 6, 'vec2_add');
fill(out, 256);
expect(out[255] === 255 * 255 - 3, 'fill_i32');
expect(apply(plusOne, 41) === 42, 'call_cb');
expect(Number(utf16(text16)) === text16.length, 'utf16_len');
getPoint(p, 3, 4);
expect(p.x === 3 && p.y === 4, 'out_struct');
expect(Number(reverse('marshal', buf, 64)) === 7 && buf.toString('utf8', 0, 7) === 'lahsram', 'out_string');
let want = 0;
for (let i = 0; i < 100; ++i) want += i * 10 - i;
expect(Number(points(pts, 100)) === want, 'struct_array');
expect(method(obj, 1) === 1, 'vtable_method');

const s = {
  add_i32: (n) => { let t = 0; for (let i = 0; i < n; ++i) t += add(i & 0xffff, 3); sink += t; },
  sum_f64: (n) => { let t = 0; for (let i = 0; i < n; ++i) t += sumF64(data, 1000); sink += t; },
  utf8_len: (n) => { let t = 0; for (let i = 0; i < n; ++i) t += Number(utf8(text64)); sink += t; },
  vec2_add: (n) => { let t = 0; for (let i = 0; i < n; ++i) t += vec({ x: i, y: 1 }, { x: 2, y: 3 }).x; sink += t; },
  fill_i32: (n) => { let t = 0; for (let i = 0; i < n; ++i) { fill(out, 256); t += out[5]; } sink += t; },
  call_cb: (n) => { let t = 0; for (let i = 0; i < n; ++i) t += apply(plusOne, i & 0xffff); sink += t; },
  utf16_len: (n) => { let t = 0; for (let i = 0; i < n; ++i) t += Number(utf16(text16)); sink += t; },
  out_struct: (n) => { let t = 0; for (let i = 0; i < n; ++i) { getPoint(p, i & 0xffff, 1); t += p.x; } sink += t; },
  out_string: (n) => {
    let t = 0;
    for (let i = 0; i < n; ++i) { const k = Number(reverse('marshal', buf, 64)); t += buf.toString('utf8', 0, k).length; }
    sink += t;
  },
  struct_array: (n) => { let t = 0; for (let i = 0; i < n; ++i) t += Number(points(pts, 100)); sink += t; },
  vtable_method: (n) => { let t = 0; for (let i = 0; i < n; ++i) t += method(obj, 1); sink += t; },
};
const heavy = { sum_f64: 100, struct_array: 10, fill_i32: 10 };
const results = {};
for (const [name, body] of Object.entries(s))
  results[name] = measure(body, Math.max(1, Math.floor(iterations / (heavy[name] || 1))));
release(obj);
koffi.unregister(plusOne);
console.log(JSON.stringify({ implementation: 'Koffi', scenarios: results }));
