#!/usr/bin/env python3
"""marshal tests: random records laid out by gcc, by clang and by the engine, compared.

Generates SEED/COUNT records with gen_layouts.py, compiles the C program with each
compiler (in parallel), runs them, prints the engine's layout of the typemap with
layout-dump, and compares every size, alignment, offset and bit range. gcc and clang
must agree with each other (both follow the System V psABI on x86-64 and AArch64), and
the engine must agree with them. Every difference prints the C declaration, the typemap
entry, and the expected (compiler) and actual (engine) lines.

The meson test `layout-random` runs a fixed seed; a long run is, for example:
  python3 tests/layout/check_layouts.py --dump build/tests/layout-dump --seed 1 --count 200000
(or several seeds: --seed 1 --seeds 20 runs seeds 1..20). Exit status: 0 all equal,
1 differences, 77 (meson's skip) when a compiler is missing.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_layouts  # noqa: E402

CFLAGS = ['-std=gnu11', '-O0', '-w', '-pipe']


def parse(text):
    """{record: {key: value}} from R/F/B lines."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ('R', 'F', 'B'):
            continue
        rec = out.setdefault(parts[1], {})
        if parts[0] == 'R':
            rec['sizeof/alignof'] = '%s %s' % (parts[2], parts[3])
        elif parts[0] == 'F':
            rec['offset/size of ' + parts[2]] = '%s %s' % (parts[3], parts[4])
        else:
            rec['first bit/width of ' + parts[2]] = '%s %s' % (parts[3], parts[4])
    return out


def compile_and_run(compilers, c_file, workdir):
    procs = []
    for cc in compilers:
        exe = os.path.join(workdir, 'layouts-' + os.path.basename(cc))
        procs.append((cc, exe, subprocess.Popen([cc] + CFLAGS + [c_file, '-o', exe],
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    results = {}
    for cc, exe, p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            sys.stdout.write('%s failed to compile %s:\n%s\n' % (cc, c_file, out.decode(errors='replace')[:4000]))
            return None
        run = subprocess.run([exe], stdout=subprocess.PIPE, check=True)
        results[cc] = parse(run.stdout.decode())
    return results


def engine_layouts(dump, records, workdir):
    """The engine's layouts; records it refuses are reported and left out, then the rest
    is loaded again (a typemap with an error loads nothing)."""
    refused = {}
    kept = list(records)
    for _ in range(10):
        tm = gen_layouts.typemap(kept)
        path = os.path.join(workdir, 'layouts.json')
        with open(path, 'w') as f:
            json.dump(tm, f, indent=1)
        run = subprocess.run([dump, path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text = run.stdout.decode(errors='replace')
        errors = [l[2:] for l in text.splitlines() if l.startswith('E ')]
        if not errors:
            if run.returncode != 0:
                sys.stdout.write('layout-dump failed (exit %d):\n%s\n' % (run.returncode, text[:4000]))
                return None, refused
            return parse(text), refused
        bad = set()
        for e in errors:
            m = re.search(r'/types/(R\d+)', e)
            if not m:
                sys.stdout.write('layout-dump: an error naming no generated record: %s\n' % e)
                return None, refused
            refused.setdefault(m.group(1), []).append(e)
            bad.add(m.group(1))
        # Records that hold a refused record by value fail with it.
        changed = True
        while changed:
            changed = False
            for rec in kept:
                if rec.name not in bad and any(r.name in bad for r in uses(rec)):
                    bad.add(rec.name)
                    refused.setdefault(rec.name, []).append('holds a refused record')
                    changed = True
        kept = [r for r in kept if r.name not in bad]
    sys.stdout.write('layout-dump: too many rounds of refused records\n')
    return None, refused


def uses(rec):
    out = []

    def walk(t):
        if isinstance(t, str):
            return
        if t[0] == 'rec':
            if t[1].name:
                out.append(t[1])
            else:
                for f in t[1].fields:
                    walk(f[1])
        elif t[0] in ('array', 'flex'):
            walk(t[1])
    for f in rec.fields:
        walk(f[1])
    return out


def show(rec, tm):
    entry = {rec.name: tm['types'][rec.name]}
    return gen_layouts.c_declaration(rec) + '\n' + json.dumps(entry)


def diff(a, b):
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k, '(missing)'), b.get(k, '(missing)')) for k in keys if a.get(k) != b.get(k)]


def check(seed, count, dump, compilers, workdir, max_shown):
    records, c_text, tm = gen_layouts.generate(seed, count)
    c_file = os.path.join(workdir, 'layouts.c')
    with open(c_file, 'w') as f:
        f.write(c_text)
    results = compile_and_run(compilers, c_file, workdir)
    if results is None:
        return None
    engine, refused = engine_layouts(dump, records, workdir)
    if engine is None:
        return None
    ref = results[compilers[0]]
    by_name = {r.name: r for r in records}
    compiler_diffs = engine_diffs = fields = 0
    shown = 0
    for rec in records:
        expected = ref.get(rec.name, {})
        fields += len(expected)
        for cc in compilers[1:]:
            d = diff(expected, results[cc].get(rec.name, {}))
            if d:
                compiler_diffs += 1
                if shown < max_shown:
                    shown += 1
                    print('=== %s: %s and %s disagree (seed %d)\n%s' % (rec.name, compilers[0], cc, seed, show(rec, tm)))
                    for k, x, y in d:
                        print('  %s: %s %s, %s %s' % (k, compilers[0], x, cc, y))
        if rec.name in refused:
            engine_diffs += 1
            if shown < max_shown:
                shown += 1
                print('=== %s: the engine refuses a layout the compilers accept (seed %d)\n%s' % (rec.name, seed, show(rec, tm)))
                for e in refused[rec.name]:
                    print('  ' + e)
            continue
        d = diff(expected, engine.get(rec.name, {}))
        if d:
            engine_diffs += 1
            if shown < max_shown:
                shown += 1
                print('=== %s: engine differs from %s (seed %d)\n%s' % (rec.name, compilers[0], seed, show(by_name[rec.name], tm)))
                for k, x, y in d:
                    print('  %s: expected %s, engine %s' % (k, x, y))
    print('seed %d: %d records, %d facts; %d compiler disagreements, %d engine differences'
          % (seed, len(records), fields, compiler_diffs, engine_diffs))
    return compiler_diffs + engine_diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dump', required=True, help='the layout-dump executable')
    ap.add_argument('--seed', type=int, required=True)
    ap.add_argument('--seeds', type=int, default=1, help='run this many seeds from --seed on')
    ap.add_argument('--count', type=int, required=True)
    ap.add_argument('--cc', action='append',
                    help='compilers (default: gcc and clang, else clang-16 or clang-14); the first is the reference')
    ap.add_argument('--keep', help='write the generated files to this directory and keep them')
    ap.add_argument('--max-shown', type=int, default=20)
    a = ap.parse_args()
    clang = next((c for c in ('clang', 'clang-16', 'clang-14') if shutil.which(c)), 'clang')
    compilers = a.cc or ['gcc', clang]
    missing = [c for c in compilers if shutil.which(c) is None]
    if missing:
        print('skipped: no %s on PATH (the comparison needs gcc and clang)' % ', '.join(missing))
        return 77
    total = 0
    for seed in range(a.seed, a.seed + a.seeds):
        if a.keep:
            os.makedirs(a.keep, exist_ok=True)
            n = check(seed, a.count, a.dump, compilers, a.keep, a.max_shown)
        else:
            with tempfile.TemporaryDirectory(prefix='marshal-layouts-') as d:
                n = check(seed, a.count, a.dump, compilers, d, a.max_shown)
        if n is None:
            return 1
        total += n
    return 1 if total else 0


if __name__ == '__main__':
    sys.exit(main())
