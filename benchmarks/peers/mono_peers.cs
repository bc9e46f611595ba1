// marshal benchmarks: the .NET marshaler itself (Mono P/Invoke) as a peer.
// Build: mcs -optimize+ -unsafe- -out:mono_peers.exe mono_peers.cs
// Usage: LD_LIBRARY_PATH=DIR_OF_FIXTURE mono mono_peers.exe ITERATIONS REPETITIONS
// Each scenario uses the idiomatic declaration a C# author would write (the
// marshaler does the work, as marshal's typemap does): int; [In] double[];
// LPUTF8Str / LPWStr strings; a sequential struct by value; [Out] int[]; a
// delegate kept alive in a field; out Point; a StringBuilder buffer; [In] Point[];
// a vtable slot through Marshal.GetDelegateForFunctionPointer. Every scenario
// checks its result once, then consumes every result of the timed loop. Prints
// one JSON object like the other peers.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

[StructLayout(LayoutKind.Sequential)]
struct Vec2 { public double x, y; }

[StructLayout(LayoutKind.Sequential)]
struct Point { public int x, y; }

[UnmanagedFunctionPointer(CallingConvention.Cdecl)]
delegate int IntFn(int v);

[UnmanagedFunctionPointer(CallingConvention.Cdecl)]
delegate int AddFn(IntPtr self, int v);

[UnmanagedFunctionPointer(CallingConvention.Cdecl)]
delegate uint ReleaseFn(IntPtr self);

static class Native {
  const string Lib = "marshal_fixture";
  [DllImport(Lib)] public static extern int add_i32(int a, int b);
  [DllImport(Lib)] public static extern double sum_in_f64_array([In] double[] values, UIntPtr n);
  [DllImport(Lib)] public static extern UIntPtr len_in_utf8([MarshalAs(UnmanagedType.LPUTF8Str)] string s);
  [DllImport(Lib)] public static extern UIntPtr len_in_utf16([MarshalAs(UnmanagedType.LPWStr)] string s);
  [DllImport(Lib)] public static extern Vec2 add_vec2(Vec2 a, Vec2 b);
  [DllImport(Lib)] public static extern void fill_out_i32_array([Out] int[] values, UIntPtr n);
  [DllImport(Lib)] public static extern int apply_i32(IntFn fn, int v);
  [DllImport(Lib)] public static extern void get_out_point(out Point p, int x, int y);
  [DllImport(Lib)] public static extern UIntPtr reverse_out_utf8([MarshalAs(UnmanagedType.LPUTF8Str)] string s,
                                                                 [MarshalAs(UnmanagedType.LPUTF8Str)] StringBuilder buf, UIntPtr cap);
  [DllImport(Lib)] public static extern long sum_in_point_array([In] Point[] points, UIntPtr n);
  [DllImport(Lib)] public static extern IntPtr counter_create(int start);
}

// A scenario: its name, its timed loop, and how much heavier than one call it is
// (the loop runs ITERATIONS / Heavy times, as in the other peers).
sealed class Scenario {
  public readonly string Name;
  public readonly Action<long> Body;
  public readonly long Heavy;
  public Scenario(string name, Action<long> body, long heavy) { Name = name; Body = body; Heavy = heavy; }
}

static class Program {
  static long sink;
  static int reps;
  static readonly IntFn PlusOne = v => v + 1;  // kept alive for the whole run

  static double[] Measure(Action<long> body, long n) {
    body(Math.Max(1, n / 20));
    var ns = new double[reps];
    for (int r = 0; r < reps; r++) {
      var watch = Stopwatch.StartNew();
      body(n);
      ns[r] = watch.Elapsed.TotalMilliseconds * 1e6 / n;
    }
    Array.Sort(ns);
    return new[] { ns[ns.Length / 2], ns[0], ns[ns.Length - 1] };
  }

  static void Expect(bool ok, string what) {
    if (!ok) throw new Exception("wrong result: " + what);
  }

  static int Main(string[] args) {
    long iterations = args.Length > 0 ? long.Parse(args[0]) : 1000000;
    reps = args.Length > 1 ? int.Parse(args[1]) : 5;
    string text64 = "marshal: P/Invoke for any host. marshal: P/Invoke for any host. ";
    string text16 = "héllo wörld, ∑ UTF-16 text here";
    var data = new double[1000];
    for (int i = 0; i < 1000; i++) data[i] = i;
    var outs = new int[256];
    var pts = new Point[100];
    for (int i = 0; i < 100; i++) { pts[i].x = i; pts[i].y = -i; }
    var buf = new StringBuilder(64);
    IntPtr obj = Native.counter_create(0);
    IntPtr vtbl = Marshal.ReadIntPtr(obj);
    var add = Marshal.GetDelegateForFunctionPointer<AddFn>(Marshal.ReadIntPtr(vtbl, 3 * IntPtr.Size));
    var release = Marshal.GetDelegateForFunctionPointer<ReleaseFn>(Marshal.ReadIntPtr(vtbl, 2 * IntPtr.Size));

    Expect(Native.add_i32(1, 2) == 3, "add_i32");
    Expect(Native.sum_in_f64_array(data, (UIntPtr)1000) == 499500, "sum_f64");
    Expect((ulong)Native.len_in_utf8(text64) == 64, "utf8_len");
    var v = Native.add_vec2(new Vec2 { x = 1, y = 2 }, new Vec2 { x = 3, y = 4 });
    Expect(v.x == 4 && v.y == 6, "vec2_add");
    Native.fill_out_i32_array(outs, (UIntPtr)256);
    Expect(outs[255] == 255 * 255 - 3, "fill_i32");
    Expect(Native.apply_i32(PlusOne, 41) == 42, "call_cb");
    Expect((ulong)Native.len_in_utf16(text16) == (ulong)text16.Length, "utf16_len");
    Native.get_out_point(out Point p, 3, 4);
    Expect(p.x == 3 && p.y == 4, "out_struct");
    Expect((ulong)Native.reverse_out_utf8("marshal", buf, (UIntPtr)64) == 7 && buf.ToString() == "lahsram", "out_string");
    long want = 0;
    for (int i = 0; i < 100; i++) want += i * 10 - i;
    Expect(Native.sum_in_point_array(pts, (UIntPtr)100) == want, "struct_array");
    Expect(add(obj, 1) == 1, "vtable_method");

    var s = new List<Scenario> {
      new Scenario("add_i32", n => { long t = 0; for (long i = 1; i <= n; i++) t += Native.add_i32((int)(i % 65536), 3); sink += t; }, 1),
      new Scenario("sum_f64", n => { double t = 0; for (long i = 1; i <= n; i++) t += Native.sum_in_f64_array(data, (UIntPtr)1000); sink += (long)t; }, 100),
      new Scenario("utf8_len", n => { long t = 0; for (long i = 1; i <= n; i++) t += (long)Native.len_in_utf8(text64); sink += t; }, 1),
      new Scenario("vec2_add", n => { double t = 0; for (long i = 1; i <= n; i++) t += Native.add_vec2(new Vec2 { x = i, y = 1 }, new Vec2 { x = 2, y = 3 }).x; sink += (long)t; }, 1),
      new Scenario("fill_i32", n => { long t = 0; for (long i = 1; i <= n; i++) { Native.fill_out_i32_array(outs, (UIntPtr)256); t += outs[5]; } sink += t; }, 10),
      new Scenario("call_cb", n => { long t = 0; for (long i = 1; i <= n; i++) t += Native.apply_i32(PlusOne, (int)(i % 65536)); sink += t; }, 1),
      new Scenario("utf16_len", n => { long t = 0; for (long i = 1; i <= n; i++) t += (long)Native.len_in_utf16(text16); sink += t; }, 10),
      new Scenario("out_struct", n => { long t = 0; for (long i = 1; i <= n; i++) { Native.get_out_point(out Point q, (int)(i % 65536), 1); t += q.x; } sink += t; }, 1),
      new Scenario("out_string", n => { long t = 0; for (long i = 1; i <= n; i++) { Native.reverse_out_utf8("marshal", buf, (UIntPtr)64); t += buf.ToString().Length; } sink += t; }, 1),
      new Scenario("struct_array", n => { long t = 0; for (long i = 1; i <= n; i++) t += Native.sum_in_point_array(pts, (UIntPtr)100); sink += t; }, 10),
      new Scenario("vtable_method", n => { long t = 0; for (long i = 1; i <= n; i++) t += add(obj, 1); sink += t; }, 1),
    };
    var parts = new List<string>();
    foreach (var sc in s) {
      var m = Measure(sc.Body, Math.Max(1, iterations / sc.Heavy));
      parts.Add("\"" + sc.Name + "\": {\"median\": " + m[0].ToString("F3", CultureInfo.InvariantCulture) +
                ", \"min\": " + m[1].ToString("F3", CultureInfo.InvariantCulture) +
                ", \"max\": " + m[2].ToString("F3", CultureInfo.InvariantCulture) + "}");
    }
    release(obj);
    Console.Error.WriteLine("sink " + sink);
    Console.WriteLine("{\"implementation\": \"Mono P/Invoke\", \"scenarios\": {" + string.Join(", ", parts) + "}}");
    return 0;
  }
}
