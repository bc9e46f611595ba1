#!/usr/bin/env python3
# marshal tests: the ABI differential matrix, runner (issue 14).
# Generates a batch of random signatures (gen_matrix.py), builds the callee
# library and the C caller with every compiler given, runs each caller against
# each library (the compilers' ground truth; where they disagree, gcc's library
# is the reference and the signatures are listed: tests/abi/README.md), writes
# expected.json and runs the C++ driver, which calls the same functions
# through the engine in both directions. Exit status: the driver's, or 1 when
# the ground truth itself is inconsistent (layouts, or gcc against itself).
import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_matrix  # noqa: E402

CFLAGS = ['-std=c11', '-fPIC', '-fvisibility=hidden', '-w']


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError('%s failed (%d):\n%s%s' % (' '.join(cmd), p.returncode, p.stdout[-4000:], p.stderr[-4000:]))
    return p.stdout


def build(cc, src, out, sources, pool, opt):
    """libabimatrix.so and the caller, compiled by `cc`, objects in parallel."""
    os.makedirs(out, exist_ok=True)
    objs = {}
    jobs = []
    for name in sources['lib'] + sources['caller']:
        obj = os.path.join(out, name[:-2] + '.o')
        objs[name] = obj
        jobs.append(pool.submit(run, [cc] + CFLAGS + opt + ['-I', src, '-c', os.path.join(src, name), '-o', obj]))
    return objs, jobs


def link(cc, out, sources, objs):
    lib = os.path.join(out, 'libabimatrix.so')
    run([cc, '-shared', '-Wl,-Bsymbolic', '-o', lib] + [objs[n] for n in sources['lib']])
    caller = os.path.join(out, 'caller')
    run([cc, '-o', caller] + [objs[n] for n in sources['caller']] + ['-L', out, '-labimatrix'])
    return lib, caller


def parse_caller(text):
    layouts, forward, cb = {}, {}, {}
    for line in text.splitlines():
        if line.startswith('L '):
            parts = line.split()
            layouts[parts[1]] = [int(x) for x in parts[2:]]
        elif line[:2] in ('F ', 'C '):
            head, ret = line.split('\t')
            kind, n, trace = head.split(' ', 2)
            (forward if kind == 'F' else cb)[int(n)] = (trace, ret)
    return layouts, forward, cb


def main():
    ap = argparse.ArgumentParser(description='marshal ABI differential matrix')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--count', type=int, default=1500)
    ap.add_argument('--driver', required=True, help='the abi-matrix driver executable')
    ap.add_argument('--cc', action='append', help='a C compiler (repeatable; default: gcc and clang)')
    ap.add_argument('--workdir', help='keep the generated files here (default: a temporary directory, removed)')
    ap.add_argument('--opt', default='-O0', help='optimization flags of the generated C (default -O0: the ABI is the '
                    'same at every level, and -O0 compiles twice as fast)')
    ap.add_argument('--jobs', type=int, default=os.cpu_count() or 2)
    ap.add_argument('--max-print', type=int, default=10, help='mismatches printed in full per library and direction')
    ap.add_argument('--marshal', help='the marshal command: its check must reject exactly the signatures that '
                    'cannot be called')
    ap.add_argument('--outcomes', help='write one JSON line per call that was not ok to this file')
    ap.add_argument('--lenient', action='store_true', help='report, but exit 0 on mismatches and refusals')
    a = ap.parse_args()
    compilers = a.cc or ['gcc', 'clang']
    for cc in compilers:
        if not shutil.which(cc):
            print('abi-matrix: C compiler %r not found (Debian: apt-get install %s)' % (cc, cc.split('-')[0]))
            return 1
    work = a.workdir or tempfile.mkdtemp(prefix='abi-matrix-')
    os.makedirs(work, exist_ok=True)
    try:
        t0 = time.time()
        src = os.path.join(work, 'src')
        sources, nrec = gen_matrix.generate(src, a.seed, a.count)
        t1 = time.time()
        libs, callers = {}, {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
            started = {cc: build(cc, src, os.path.join(work, os.path.basename(cc)), sources, pool, a.opt.split())
                       for cc in compilers}
            for cc, (objs, jobs) in started.items():
                for j in jobs:
                    j.result()
                libs[cc], callers[cc] = link(cc, os.path.join(work, os.path.basename(cc)), sources, objs)
        t2 = time.time()
        # Every caller against every library: the compilers must agree with each other.
        outputs = {}
        for ccall in compilers:
            for clib in compilers:
                env = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(libs[clib]))
                outputs[(ccall, clib)] = parse_caller(run([callers[ccall]], env=env))
        t3 = time.time()
        # gcc (the System V reference) is the ground truth where the compilers
        # disagree; without gcc, the first compiler given.
        base = next((cc for cc in compilers if os.path.basename(cc).startswith('gcc')), compilers[0])
        layouts, forward, cb = outputs[(base, base)]
        problems = []
        # Where another compiler's caller or callee reads or writes a value
        # differently from the reference compiler's (seen: clang and gcc on
        # unions whose members leave different bytes unspecified, C11
        # 6.2.6.1p7, or which they classify differently), the compilers' own
        # ABIs disagree: the engine is judged against the reference library
        # alone there, and the signatures are listed. The reference compiler
        # must agree with itself (its callback direction with its direct call),
        # and every layout must be the same.
        disagree = {}
        for key, (lay, fwd, back) in outputs.items():
            if lay != layouts:
                bad = sorted(k for k in layouts if lay.get(k) != layouts[k])[:5]
                problems.append('layout differs between %s and %s: %s' % (key, (base, base), bad))
            for n in range(a.count):
                if key == (base, base):
                    if back.get(n) != fwd.get(n):
                        problems.append('cb%d(f%d) (caller and library %s) gave %s, the direct call %s'
                                        % (n, n, base, back.get(n), fwd.get(n)))
                    if n not in fwd:
                        problems.append('f%d: no output from caller and library %s' % (n, base))
                elif fwd.get(n) != forward.get(n) or back.get(n) != forward.get(n):
                    disagree.setdefault(n, []).append('%s caller with %s library' % key)
        with open(os.path.join(src, 'matrix.json')) as f:
            matrix = json.load(f)
        if disagree:
            print('abi-matrix: compiler disagreements on %d signatures (%s\'s library is the reference; the engine '
                  'is not judged against the others\' for them):' % (len(disagree), os.path.basename(base)))
            for n in sorted(disagree):
                print('  f%d: %s  [differs: %s]' % (n, matrix['functions'][n]['proto'], ', '.join(disagree[n])))
        for name, r in matrix['records'].items():  # the generator's own layout model
            if layouts.get(name) != [r['size'], r['align']] + r['offsets']:
                problems.append('generator layout of %s is %s, the compiler says %s'
                                % (name, [r['size'], r['align']] + r['offsets'], layouts.get(name)))
        if problems:
            print('abi-matrix: the ground truth is inconsistent (%d problems):' % len(problems))
            for p in problems[:30]:
                print('  ' + p)
            return 1
        expected = {'seed': a.seed, 'libs': {os.path.basename(cc): libs[cc] for cc in compilers},
                    'reference': os.path.basename(base), 'disagreements': sorted(disagree),
                    'layouts': layouts,
                    'functions': [{'trace': forward[n][0], 'ret': forward[n][1]} for n in range(a.count)]}
        with open(os.path.join(src, 'expected.json'), 'w') as f:
            json.dump(expected, f)
        print('abi-matrix: seed %d: %d signatures, %d records; generated in %.1fs, compiled (%s) in %.1fs, '
              'ran every caller with every library (%d runs, %.1fs)' % (a.seed, a.count, nrec, t1 - t0, ', '.join(compilers), t2 - t1,
                                                 len(outputs), t3 - t2))
        sys.stdout.flush()
        cmd = [a.driver, '--dir', src, '--max-print', str(a.max_print)] + (['--lenient'] if a.lenient else []) + \
            (['--marshal', a.marshal] if a.marshal else []) + (['--outcomes', a.outcomes] if a.outcomes else [])
        rc = subprocess.run(cmd).returncode
        print('abi-matrix: driver finished in %.1fs (total %.1fs)' % (time.time() - t3, time.time() - t0))
        if rc != 0 and a.workdir is None:
            print('abi-matrix: rerun with --workdir DIR to keep the generated sources')
        return rc
    except RuntimeError as e:
        print('abi-matrix: %s' % e)
        return 1
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
