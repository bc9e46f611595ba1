#!/usr/bin/env python3
# marshal tests: the ABI differential matrix, signature generator (issue 14).
# From a seed, draws random C signatures (every integer width, float, double,
# _Bool, structs by value of every size, nested, inline arrays, unions, packed,
# each eightbyte class mix, register spills, hidden return pointers) and writes
# the C callees, the C caller (the compilers' ground truth), the typemap and
# the arguments the engine must pass. Standard library only.
import argparse
import json
import os
import platform
import random
import struct

MACHINE = platform.machine()
CHAR_SIGNED = MACHINE not in ('aarch64', 'arm64', 'armv7l', 'ppc64le', 's390x')
WCHAR_SIGNED = MACHINE not in ('aarch64', 'arm64', 'armv7l')

# Functions per generated C file: the files compile in parallel.
CHUNK = 400


# ---- types ---------------------------------------------------------------------------------

class Prim:
    def __init__(self, tm, c, size, kind, signed=False):
        self.tm, self.c, self.size, self.align, self.kind, self.signed = tm, c, size, size, kind, signed
        self.name = tm

    def is_record(self):
        return False


PRIMS = [
    Prim('int8', 'int8_t', 1, 'int', True), Prim('uint8', 'uint8_t', 1, 'int'),
    Prim('int16', 'int16_t', 2, 'int', True), Prim('uint16', 'uint16_t', 2, 'int'),
    Prim('int32', 'int32_t', 4, 'int', True), Prim('uint32', 'uint32_t', 4, 'int'),
    Prim('int64', 'int64_t', 8, 'int', True), Prim('uint64', 'uint64_t', 8, 'int'),
    Prim('char', 'char', 1, 'int', CHAR_SIGNED), Prim('schar', 'signed char', 1, 'int', True),
    Prim('uchar', 'unsigned char', 1, 'int'), Prim('short', 'short', 2, 'int', True),
    Prim('ushort', 'unsigned short', 2, 'int'), Prim('int', 'int', 4, 'int', True),
    Prim('uint', 'unsigned int', 4, 'int'), Prim('long', 'long', 8, 'int', True),
    Prim('ulong', 'unsigned long', 8, 'int'), Prim('longlong', 'long long', 8, 'int', True),
    Prim('ulonglong', 'unsigned long long', 8, 'int'),
    Prim('size_t', 'size_t', 8, 'int'), Prim('ssize_t', 'ssize_t', 8, 'int', True),
    Prim('intptr_t', 'intptr_t', 8, 'int', True), Prim('uintptr_t', 'uintptr_t', 8, 'int'),
    Prim('ptrdiff_t', 'ptrdiff_t', 8, 'int', True),
    Prim('char16_t', 'char16_t', 2, 'int'), Prim('char32_t', 'char32_t', 4, 'int'),
    Prim('wchar_t', 'wchar_t', 4, 'int', WCHAR_SIGNED),
    Prim('float32', 'float', 4, 'float'), Prim('float', 'float', 4, 'float'),
    Prim('float64', 'double', 8, 'float'), Prim('double', 'double', 8, 'float'),
    Prim('cbool', '_Bool', 1, 'bool'),
]
P = {p.tm: p for p in PRIMS}
INTS = [p for p in PRIMS if p.kind == 'int']
FLOATS = [p for p in PRIMS if p.kind == 'float']
SCALARS = INTS + FLOATS + [P['cbool']]


class Array:
    """An inline array T[N]: only as a struct or union field."""
    def __init__(self, elem, count):
        self.elem, self.count = elem, count
        self.size, self.align = elem.size * count, elem.align

    def is_record(self):
        return False


class Record:
    def __init__(self, name, kind, fields, pack=0, active=0):
        self.name, self.kind, self.fields, self.pack, self.active = name, kind, fields, pack, active
        self.layout()

    def is_record(self):
        return True

    def layout(self):
        # The C rules: natural alignment, capped by #pragma pack(N).
        off, align, size, self.offsets = 0, 1, 0, []
        for _, t in self.fields:
            a = min(t.align, self.pack) if self.pack else t.align
            align = max(align, a)
            if self.kind == 'union':
                self.offsets.append(0)
                size = max(size, t.size)
            else:
                off = (off + a - 1) // a * a
                self.offsets.append(off)
                off += t.size
                size = off
        self.align = align
        self.size = (size + align - 1) // align * align


def leaves(t, base=0, every_member=False):
    """(offset, prim) of each scalar; a union's active member only unless every_member."""
    if isinstance(t, Prim):
        return [(base, t)]
    if isinstance(t, Array):
        out = []
        for i in range(t.count):
            out += leaves(t.elem, base + i * t.elem.size, every_member)
        return out
    out = []
    for i, ((_, ft), off) in enumerate(zip(t.fields, t.offsets)):
        if t.kind == 'union' and not every_member and i != t.active:
            continue
        out += leaves(ft, base + off, every_member)
    return out


def classify(t):
    """System V x86-64 classes of a by-value type: 'MEMORY' or a list of 'INTEGER'/'SSE'."""
    if isinstance(t, Prim):
        return ['SSE'] if t.kind == 'float' else ['INTEGER']
    if t.size > 16:
        return 'MEMORY'
    ls = leaves(t, 0, True)
    if any(off % p.align for off, p in ls):
        return 'MEMORY'
    classes = []
    for eb in range((t.size + 7) // 8):
        inside = [p for off, p in ls if off < eb * 8 + 8 and off + p.size > eb * 8]
        classes.append('SSE' if inside and all(p.kind == 'float' for p in inside) else 'INTEGER')
    return classes


def mentions(t, pred):
    if pred(t):
        return True
    if isinstance(t, Array):
        return mentions(t.elem, pred)
    if isinstance(t, Record):
        return any(mentions(ft, pred) for _, ft in t.fields)
    return False


# ---- the type pool -------------------------------------------------------------------------

class Pool:
    """Records by category; a category holds up to `limit` of them, then they are reused."""

    def __init__(self, rng, count):
        self.rng = rng
        self.limit = 3 + count // 150
        self.by_cat = {}
        self.records = []  # in definition order (dependencies first)

    def add(self, kind, fields, pack=0, active=0):
        r = Record('S%d' % len(self.records) if kind == 'struct' else 'U%d' % len(self.records), kind,
                   [('f%d' % i, t) for i, t in enumerate(fields)], pack, active)
        self.records.append(r)
        return r

    def get(self, cat):
        have = self.by_cat.setdefault(cat, [])
        if len(have) >= self.limit or (have and self.rng.random() < 0.3):
            return self.rng.choice(have)
        r = self.make(cat)
        have.append(r)
        return r

    # -- field helpers
    def prim(self, kinds=('int', 'float', 'bool')):
        rng = self.rng
        k = rng.choice(kinds)
        return rng.choice(INTS) if k == 'int' else rng.choice(FLOATS) if k == 'float' else P['cbool']

    def fill(self, nbytes, offset, max_align, kinds):
        """Fields that fill exactly nbytes from offset without padding."""
        rng, out, off, end = self.rng, [], offset, offset + nbytes
        while off < end:
            rem = end - off
            cands = [p for p in SCALARS if p.size <= rem and off % p.align == 0 and p.align <= max_align
                     and p.kind in kinds]
            if not cands:
                cands = [P['uint8'] if 'int' in kinds else P['cbool']]
            p = rng.choice(cands)
            n = 1
            if rem // p.size > 1 and rng.random() < (0.3 if rem < 32 else 0.9):
                n = rng.randint(2, min(rem // p.size, 64))
            out.append(Array(p, n) if n > 1 else p)
            off += p.size * n
        return out

    def sized(self, size, kinds):
        """A struct of exactly `size` bytes and no padding, alignment the largest fitting power of two."""
        align = 8
        while size % align:
            align //= 2
        firsts = [p for p in SCALARS if p.align == align and p.kind in kinds] or \
                 [p for p in SCALARS if p.align == align and p.kind == 'int']
        first = self.rng.choice(firsts)
        return [first] + self.fill(size - first.size, first.size, align, kinds)

    def inline_array(self):
        rng = self.rng
        return rng.choice([Array(P['char'], 3), Array(P['float'], 2), Array(P['int16'], 5),
                           Array(rng.choice(SCALARS), rng.randint(1, 6))])

    def random_fields(self, n):
        rng, out = self.rng, []
        for _ in range(n):
            r = rng.random()
            if r < 0.55:
                out.append(self.prim())
            elif r < 0.75:
                out.append(self.inline_array())
            elif r < 0.9 and self.records:
                small = [x for x in self.records[-60:] if x.size <= 24]
                out.append(rng.choice(small) if small else self.prim())
            else:
                out.append(Array(self.get(rng.choice(['INTEGER', 'SSE', 'sized:%d' % rng.randint(1, 8)])),
                                 rng.randint(1, 3)))
        return out

    def nest(self, fields):
        """Sometimes groups consecutive fields into a nested struct (same classification)."""
        rng = self.rng
        if len(fields) < 2 or rng.random() < 0.6:
            return fields
        i = rng.randrange(len(fields) - 1)
        j = rng.randint(i + 1, len(fields))
        inner = self.add('struct', fields[i:j])
        merged = fields[:i] + [inner] + fields[j:]
        return merged

    # -- categories
    def make(self, cat):
        rng = self.rng
        if cat.startswith('sized:'):
            size = int(cat[6:])
            kinds = rng.choice([('int',), ('int', 'float'), ('int', 'float', 'bool'), ('float',)])
            if size % 4 and kinds == ('float',):
                kinds = ('int', 'float')
            return self.add('struct', self.sized(size, kinds))
        if cat == 'INTEGER':
            return self.add('struct', self.nest(self.sized(rng.randint(1, 16), ('int', 'bool'))))
        if cat == 'SSE':
            f, d = P['float'], P['double']
            shape = rng.choice([[d], [f], [f, f], [Array(f, 2)], [d, d], [f, f, d], [d, Array(f, 2)],
                                [d, f], [P['float32'], P['float64']], [Array(d, 2)]])
            return self.add('struct', self.nest(shape))
        if cat == 'INT_SSE':  # first eightbyte INTEGER, second SSE
            first = rng.choice([
                lambda: self.fill(8, 0, 8, ('int', 'bool')),
                lambda: [rng.choice(INTS + [P['cbool']])],  # then padding up to the double
                lambda: [P['int32'], rng.choice(FLOATS[:2])],  # a float in an INTEGER eightbyte
                lambda: [P['int64']]])()
            used = Record('x', 'struct', [('f', t) for t in first]).size
            if used < 8:
                second = [P['double']]
            else:
                second = rng.choice([[P['double']], [P['float']], [P['float'], P['float']], [Array(P['float'], 2)]])
            return self.add('struct', self.nest(first + second))
        if cat == 'SSE_INT':  # first eightbyte SSE, second INTEGER
            first = rng.choice([[P['double']], [P['float'], P['float']], [Array(P['float32'], 2)]])
            second = self.fill(rng.randint(1, 8), 8, 8, ('int', 'bool'))
            return self.add('struct', self.nest(first + second))
        if cat == '3floats':
            return self.add('struct', rng.choice([[P['float']] * 3, [Array(P['float'], 3)],
                                                  [Array(P['float'], 2), P['float32']]]))
        if cat == '4floats':
            return self.add('struct', rng.choice([[P['float']] * 4, [Array(P['float'], 4)],
                                                  [Array(P['float'], 2), Array(P['float'], 2)]]))
        if cat == 'packed_aligned':
            # Every field at its natural alignment; only the struct's alignment is reduced.
            pack = rng.choice([1, 2, 4])
            shape = rng.random()
            if shape < 0.25:
                fields = [P['uint16'], P['uint16']]
                pack = 1
            elif shape < 0.4:
                fields = [Array(P['uint32'], 5)]
                pack = 1
            else:
                fields = [self.prim() if rng.random() < 0.7 else self.inline_array() for _ in range(rng.randint(1, 5))]
                fields.sort(key=lambda t: -t.align)
            if max(t.align for t in fields) <= pack:
                fields.insert(0, rng.choice([P['int64'], P['double'], P['uint64']]))
            return self.add('struct', fields, pack)
        if cat == 'packed_unaligned':
            # A lead whose size puts the next field off its natural alignment.
            pack = rng.choice([1, 1, 2, 4])
            lead = rng.choice({1: [P['uint8'], P['char'], P['cbool'], Array(P['char'], 3), P['int16']],
                               2: [P['int16'], P['ushort'], Array(P['uint8'], 2), Array(P['int16'], 3)],
                               4: [P['int32'], P['float'], Array(P['int16'], 2)]}[pack])
            fields = [lead]
            if rng.random() < 0.15:  # an aligned struct at an unaligned offset
                fields.append(self.get('INT_SSE'))
            fields.append(rng.choice([t for t in SCALARS if t.align > pack and lead.size % t.align]))
            for _ in range(rng.randint(0, 3)):
                fields.insert(rng.randint(2, len(fields)), self.prim() if rng.random() < 0.8 else self.inline_array())
            return self.add('struct', fields, pack)
        if cat == 'union':
            members = []
            for _ in range(rng.randint(2, 4)):
                r = rng.random()
                if r < 0.5:
                    members.append(self.prim())
                elif r < 0.75:
                    members.append(self.inline_array())
                else:
                    members.append(self.get(rng.choice(['INTEGER', 'SSE', 'INT_SSE', 'sized:%d' % rng.randint(1, 24)])))
            return self.add('union', members, active=rng.randrange(len(members)))
        if cat == 'nested':
            cats = ['INTEGER', 'SSE', 'INT_SSE', 'SSE_INT', 'union', 'packed_aligned', '3floats']
            inner = [self.get(rng.choice(cats + ['sized:%d' % rng.randint(1, 40)])) for _ in range(rng.randint(1, 2))]
            fields = inner + self.random_fields(rng.randint(0, 3))
            rng.shuffle(fields)
            return self.add('struct', fields)
        if cat == 'big':
            return self.get('sized:%d' % rng.choice([64, 100, 256, rng.randint(33, 300)]))
        if cat == 'random':
            return self.add('struct', self.random_fields(rng.randint(1, 6)))
        raise ValueError(cat)


SIZES = list(range(1, 33)) + [64, 100, 256]
RECORD_CATS = ['INTEGER', 'SSE', 'INT_SSE', 'SSE_INT', '3floats', '4floats', 'packed_aligned', 'packed_unaligned',
               'union', 'nested', 'big', 'random']


# ---- values --------------------------------------------------------------------------------

def f32(x):
    return struct.unpack('<f', struct.pack('<f', x))[0]


def draw_value(t, rng):
    if isinstance(t, Prim):
        if t.kind == 'bool':
            return rng.random() < 0.5
        if t.kind == 'float':
            r = rng.random()
            if r < 0.1:
                v = rng.choice([0.0, -0.0, 1.5, -2.25, 1e-300, 3.4028234663852886e38, 1.401298464324817e-45])
            elif t.size == 4:
                while True:
                    v = struct.unpack('<f', struct.pack('<I', rng.getrandbits(32)))[0]
                    if v == v and abs(v) != float('inf'):
                        break
            else:
                while True:
                    v = struct.unpack('<d', struct.pack('<Q', rng.getrandbits(64)))[0]
                    if v == v and abs(v) != float('inf'):
                        break
            return f32(v) if t.size == 4 else v
        bits = t.size * 8
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if t.signed else (0, (1 << bits) - 1)
        r = rng.random()
        if r < 0.25:
            return rng.choice([lo, hi, 0, 1, -1 if t.signed else hi - 1])
        if r < 0.5:
            return max(lo, min(hi, rng.randint(-1000, 1000)))
        return rng.randint(lo, hi)
    if isinstance(t, Array):
        return [draw_value(t.elem, rng) for _ in range(t.count)]
    if t.kind == 'union':
        fname, ft = t.fields[t.active]
        return {fname: draw_value(ft, rng)}
    return {fname: draw_value(ft, rng) for fname, ft in t.fields}


def c_value(t, v):
    """A C initializer of exactly this value (floats as hexadecimal literals)."""
    if isinstance(t, Prim):
        if t.kind == 'bool':
            return '1' if v else '0'
        if t.kind == 'float':
            return v.hex() + ('f' if t.size == 4 else '')
        if t.size == 8:
            if t.signed:
                return '(-9223372036854775807LL-1)' if v == -(1 << 63) else '%dLL' % v
            return '%dULL' % v
        if t.size == 4:
            if t.signed:
                return '(-2147483647-1)' if v == -(1 << 31) else '%d' % v
            return '%dU' % v
        return '%d' % v
    if isinstance(t, Array):
        return '{' + ', '.join(c_value(t.elem, x) for x in v) + '}'
    return '{' + ', '.join('.%s = %s' % (fname, c_value(ft, v[fname])) for fname, ft in t.fields if fname in v) + '}'


# ---- signatures ----------------------------------------------------------------------------

class Sig:
    def __init__(self, n, ret, params, family):
        self.n, self.ret, self.params, self.family = n, ret, params, family
        self.tags = []


def int_class_prim(rng):
    return rng.choice(INTS + [P['cbool']])


def registers(ret, params):
    """Where each parameter goes (psABI 3.2.3): ('reg', first gpr index or None) or ('stack',)."""
    gpr = 1 if ret is not None and isinstance(ret, Record) and classify(ret) == 'MEMORY' else 0
    sse, out = 0, []
    for t in params:
        c = classify(t)
        if c == 'MEMORY':
            out.append(('stack', None))
            continue
        ni, ns = c.count('INTEGER'), c.count('SSE')
        if gpr + ni > 6 or sse + ns > 8:
            out.append(('stack', None))
            continue
        first_int = gpr if ni else None
        out.append(('reg', first_int))
        gpr += ni
        sse += ns
    return out


def draw_signature(n, rng, pool):
    fams = [('hidden_int_sse', 22), ('int_sse_no_hidden', 8), ('spill', 13), ('structs', 25), ('scalars', 12),
            ('ret_sized', 20)]
    total = sum(w for _, w in fams)
    x = rng.uniform(0, total)
    for family, w in fams:
        x -= w
        if x <= 0:
            break

    def any_ret():
        r = rng.random()
        if r < 0.1:
            return None
        if r < 0.45:
            return rng.choice(SCALARS)
        return pool.get(rng.choice(RECORD_CATS + ['sized:%d' % rng.choice(SIZES)]))

    def any_param():
        r = rng.random()
        if r < 0.5:
            return rng.choice(SCALARS)
        return pool.get(rng.choice(RECORD_CATS + ['sized:%d' % rng.choice(SIZES)]))

    if family in ('hidden_int_sse', 'int_sse_no_hidden'):
        # The libffi PR #848 workaround's class: an {INTEGER, SSE} struct whose integer
        # half lands in the 5th or 6th general register (or finds none left), with an
        # SSE register already used, with and without a hidden return pointer.
        if family == 'hidden_int_sse':
            while True:
                ret = pool.get(rng.choice(['big', 'sized:%d' % rng.choice(SIZES[16:]), 'random', 'nested',
                                           'packed_aligned', 'union']))
                if classify(ret) == 'MEMORY':
                    break
            n_int = rng.choice([3, 4, 4, 5])
        else:
            ret = rng.choice([None, rng.choice(SCALARS), pool.get(rng.choice(['INTEGER', 'SSE', 'INT_SSE']))])
            n_int = rng.choice([4, 5, 5, 6])
        pre = [int_class_prim(rng) for _ in range(n_int)]
        for _ in range(rng.choice([0, 1, 1, 2, 3])):  # none: the PR #848 case needs an SSE register in use
            pre.insert(rng.randint(0, len(pre)), rng.choice(FLOATS))
        params = pre + [pool.get('INT_SSE')] + [any_param() for _ in range(rng.randint(0, 3))]
    elif family == 'spill':
        params = [int_class_prim(rng) for _ in range(rng.randint(7, 12))] + \
                 [rng.choice(FLOATS) for _ in range(rng.randint(9, 12))] + \
                 [pool.get(rng.choice(['INTEGER', 'SSE', 'INT_SSE', 'SSE_INT', '3floats', '4floats']))
                  for _ in range(rng.randint(0, 3))]
        rng.shuffle(params)
        ret = any_ret()
    elif family == 'structs':
        params = [pool.get(rng.choice(RECORD_CATS + ['sized:%d' % rng.choice(SIZES)])) if rng.random() < 0.6
                  else rng.choice(SCALARS) for _ in range(rng.randint(1, 6))]
        ret = any_ret()
    elif family == 'scalars':
        params = [rng.choice(SCALARS) for _ in range(rng.randint(0, 10))]
        ret = ([None] + SCALARS)[n % (len(SCALARS) + 1)]
    else:  # ret_sized: returns of structs of every size (and the other record kinds)
        k = n % (len(SIZES) + 4)
        ret = pool.get('sized:%d' % SIZES[k]) if k < len(SIZES) else \
            pool.get(['union', 'packed_aligned', 'packed_unaligned', 'nested'][k - len(SIZES)])
        params = [any_param() for _ in range(rng.randint(0, 5))]
    sig = Sig(n, ret, params, family)
    sig.tags = tags_of(sig)
    return sig


def tags_of(sig):
    tags = ['family:' + sig.family]
    r = sig.ret
    if r is None:
        tags.append('ret:void')
    elif isinstance(r, Prim):
        tags.append('ret:' + r.tm)
    else:
        c = classify(r)
        tags.append('ret:struct_mem' if c == 'MEMORY' else 'ret:struct_' + '_'.join(c))
        if r.size <= 32 or r.size in (64, 100, 256):
            tags.append('ret:size%d' % r.size)
    regs = registers(r, sig.params)
    hidden = isinstance(r, Record) and classify(r) == 'MEMORY'
    ints = sum(1 for t in sig.params if isinstance(t, Prim) and t.kind != 'float')
    floats = sum(1 for t in sig.params if isinstance(t, Prim) and t.kind == 'float')
    if ints > 6:
        tags.append('spill:int')
    if floats > 8:
        tags.append('spill:sse')
    sse_before = 0
    for t, (where, gi) in zip(sig.params, regs):
        c = classify(t)
        if isinstance(t, Record) and c != 'MEMORY' and len(c) == 2 and c == ['INTEGER', 'SSE']:
            pos = ('gpr%d' % (gi + 1)) if where == 'reg' else 'stack'
            tags.append('int_sse@%s%s%s' % (pos, '+hidden' if hidden else '', '+sse_used' if sse_before else ''))
        if c != 'MEMORY':
            sse_before += c.count('SSE') if isinstance(c, list) else 0
    for t in sig.params + ([r] if r is not None else []):
        if not isinstance(t, Record):
            continue
        c = classify(t)
        if c != 'MEMORY':
            tags.append('class:' + '_'.join(c))
        if mentions(t, lambda x: isinstance(x, Record) and x.pack):  # packed, at any depth
            tags.append('packed_unaligned' if any(off % p.align for off, p in leaves(t, 0, True)) else 'packed_aligned')
        if mentions(t, lambda x: isinstance(x, Record) and x.kind == 'union'):
            tags.append('union')
        if any(isinstance(ft, Record) or (isinstance(ft, Array) and isinstance(ft.elem, Record)) for _, ft in t.fields):
            tags.append('nested')
        if mentions(t, lambda x: isinstance(x, Array)):
            tags.append('inline_array')
        if t.size > 16:
            tags.append('struct>16')
        if t.size in (64, 100, 256):
            tags.append('struct_big')
        if all(isinstance(ft, Prim) and ft.tm in ('float', 'float32') for _, ft in t.fields) or (
                len(t.fields) == 1 and isinstance(t.fields[0][1], Array) and t.fields[0][1].elem.kind == 'float'
                and t.fields[0][1].elem.size == 4):
            nf = len(leaves(t))
            if nf in (3, 4):
                tags.append('%dfloats' % nf)
    if any(isinstance(t, Prim) and t.kind == 'bool' for t in sig.params):
        tags.append('cbool')
    return sorted(set(tags))


# ---- output: C -----------------------------------------------------------------------------

def ctype(t):
    return t.c if isinstance(t, Prim) else t.name


def decl(t, name):
    if isinstance(t, Array):
        return decl(t.elem, name + '[%d]' % t.count)
    return '%s %s' % (ctype(t), name)


def proto(sig, name=None):
    ret = 'void' if sig.ret is None else ctype(sig.ret)
    ps = ', '.join('%s a%d' % (ctype(t), i) for i, t in enumerate(sig.params)) or 'void'
    return '%s %s(%s)' % (ret, name or 'f%d' % sig.n, ps)


def cb_typedef(sig):
    ret = 'void' if sig.ret is None else ctype(sig.ret)
    ps = ', '.join(ctype(t) for t in sig.params) or 'void'
    return 'typedef %s (*Cb%d_t)(%s);' % (ret, sig.n, ps)


def leaf_code(t, addr, op, depth=0):
    """C statements that trace (op 'T') or fill (op 'F') a value at the char* expression addr."""
    if isinstance(t, Prim):
        if t.kind == 'bool':
            return '%sB(%s);' % (op, addr)
        if t.kind == 'float':
            return '%s%s(%s);' % (op, 'F' if t.size == 4 else 'D', addr)
        return '%s%s(%s, %s);' % (op, 'I' if t.signed else 'U', t.c, addr)
    if isinstance(t, Record):
        return 'abi_tr_%s(%s);' % (t.name, addr) if op == 'T' else 'abi_fl_%s(%s, st);' % (t.name, addr)
    # Elements at the compiler's sizeof (the layout lines check the generator's sizes).
    i = 'i%d' % depth
    body = leaf_code(t.elem, '%s + %s * sizeof(%s)' % (addr, i, ctype(t.elem)), op, depth + 1)
    return 'for (int %s = 0; %s < %d; ++%s) { %s }' % (i, i, t.count, i, body)


def record_funcs(r):
    fields = r.fields if r.kind == 'struct' else [r.fields[r.active]]
    tr, fl = [], []
    for fname, ft in fields:
        addr = '(char*)p + offsetof(%s, %s)' % (r.name, fname)
        tr.append(leaf_code(ft, addr, 'T'))
        fl.append(leaf_code(ft, addr, 'F'))
    return ('void abi_tr_%s(const void* p) { %s }\n' % (r.name, ' '.join(tr)) +
            'void abi_fl_%s(void* p, uint64_t* st) { %s }\n' % (r.name, ' '.join(fl)))


HEADER_PRELUDE = r'''// Generated by tests/abi/gen_matrix.py: do not edit.
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <uchar.h>
#include <wchar.h>

#define ABI_EXPORT __attribute__((visibility("default")))
// The trace: what a callee received, one token per scalar (padding excluded).
ABI_EXPORT void abi_reset(void);
ABI_EXPORT const char* abi_get(int which);  // 0: arguments, 1: a return value
ABI_EXPORT void abi_begin(int n);
ABI_EXPORT void abi_sep(void);
ABI_EXPORT void abi_ret_begin(void);
ABI_EXPORT void abi_ret_end(void);
ABI_EXPORT void abi_ti(int64_t v);
ABI_EXPORT void abi_tu(uint64_t v);
ABI_EXPORT void abi_tf(uint32_t bits);
ABI_EXPORT void abi_td(uint64_t bits);
ABI_EXPORT uint64_t abi_seed(void);
ABI_EXPORT uint64_t abi_mix(uint64_t* st);
ABI_EXPORT void abi_emit(int n, char what);
#define TI(T, a) do { T v_; memcpy(&v_, (a), sizeof v_); abi_ti((int64_t)v_); } while (0)
#define TU(T, a) do { T v_; memcpy(&v_, (a), sizeof v_); abi_tu((uint64_t)v_); } while (0)
#define TB(a) do { uint8_t v_; memcpy(&v_, (a), 1); abi_tu(v_); } while (0)
#define TF(a) do { uint32_t v_; memcpy(&v_, (a), 4); abi_tf(v_); } while (0)
#define TD(a) do { uint64_t v_; memcpy(&v_, (a), 8); abi_td(v_); } while (0)
// Fill: from the hash of the trace; floating point always finite (the exponent's
// lowest bit cleared when all were set).
#define FI(T, a) do { T v_ = (T)abi_mix(st); memcpy((a), &v_, sizeof v_); } while (0)
#define FU(T, a) FI(T, a)
#define FB(a) do { uint8_t v_ = (uint8_t)(abi_mix(st) & 1); memcpy((a), &v_, 1); } while (0)
#define FF(a) do { uint32_t v_ = (uint32_t)abi_mix(st); if (((v_ >> 23) & 0xff) == 0xff) v_ &= ~(1u << 23); \
                   memcpy((a), &v_, 4); } while (0)
#define FD(a) do { uint64_t v_ = abi_mix(st); if (((v_ >> 52) & 0x7ff) == 0x7ff) v_ &= ~(1ull << 52); \
                   memcpy((a), &v_, 8); } while (0)
'''

RUNTIME = r'''// Generated by tests/abi/gen_matrix.py: the trace runtime.
#include "abi.h"
#include <stdio.h>
#include <stdlib.h>

static char* buf[2];
static size_t len[2], cap[2];
static int cur;

static void put(const char* s, size_t n) {
  if (len[cur] + n + 1 > cap[cur]) {
    cap[cur] = (len[cur] + n + 1) * 2;
    buf[cur] = realloc(buf[cur], cap[cur]);
    if (!buf[cur]) abort();
  }
  memcpy(buf[cur] + len[cur], s, n);
  len[cur] += n;
  buf[cur][len[cur]] = 0;
}
void abi_reset(void) { len[0] = len[1] = 0; cur = 0; put("", 0); cur = 1; put("", 0); cur = 0; }
const char* abi_get(int which) { return buf[which] ? buf[which] : ""; }
void abi_begin(int n) { char t[32]; put(t, (size_t)snprintf(t, sizeof t, "f%d:", n)); }
void abi_sep(void) { put(" |", 2); }
void abi_ret_begin(void) { cur = 1; put("r:", 2); }
void abi_ret_end(void) { cur = 0; }
void abi_ti(int64_t v) { char t[32]; put(t, (size_t)snprintf(t, sizeof t, " %lld", (long long)v)); }
void abi_tu(uint64_t v) { char t[32]; put(t, (size_t)snprintf(t, sizeof t, " %llu", (unsigned long long)v)); }
void abi_tf(uint32_t b) { char t[32]; put(t, (size_t)snprintf(t, sizeof t, " f%08x", (unsigned)b)); }
void abi_td(uint64_t b) { char t[32]; put(t, (size_t)snprintf(t, sizeof t, " d%016llx", (unsigned long long)b)); }
// FNV-1a of the argument trace seeds the return value.
uint64_t abi_seed(void) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < len[0]; ++i) h = (h ^ (unsigned char)buf[0][i]) * 1099511628211ull;
  return h;
}
uint64_t abi_mix(uint64_t* st) {  // splitmix64
  uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
void abi_emit(int n, char what) { printf("%c %d %s\t%s\n", what, n, abi_get(0), abi_get(1)); }
'''


def write_c(out, sigs, pool):
    h = [HEADER_PRELUDE, '\n// ---- types\n']
    for r in pool.records:
        if r.pack:
            h.append('#pragma pack(push, %d)\n' % r.pack)
        h.append('typedef %s %s { %s } %s;\n' % (r.kind, r.name, ' '.join(decl(ft, fn) + ';' for fn, ft in r.fields),
                                                 r.name))
        if r.pack:
            h.append('#pragma pack(pop)\n')
        h.append('ABI_EXPORT void abi_tr_%s(const void* p);\nABI_EXPORT void abi_fl_%s(void* p, uint64_t* st);\n'
                 % (r.name, r.name))
    h.append('\n// ---- functions\n')
    for s in sigs:
        h.append('ABI_EXPORT %s;\n%s\nABI_EXPORT void cb%d(Cb%d_t fp);\n' % (proto(s), cb_typedef(s), s.n, s.n))
    files = {'abi.h': ''.join(h), 'abi_rt.c': RUNTIME}

    recs = pool.records
    for k in range(0, max(1, len(recs)), CHUNK):
        files['types_%d.c' % (k // CHUNK)] = '#include "abi.h"\n' + ''.join(record_funcs(r) for r in recs[k:k + CHUNK])

    def trace_ret(t, var):
        if t is None:
            return ''
        return leaf_code(t, '(char*)&%s' % var, 'T')

    def arg_decls(s):
        return ' '.join('const %s a%d = %s;' % (ctype(t), i, c_value(t, v))
                        for i, (t, v) in enumerate(zip(s.params, s.values)))

    def call_expr(s, fn):
        return '%s(%s)' % (fn, ', '.join('a%d' % i for i in range(len(s.params))))

    callee_files, caller_files = [], []
    for k in range(0, len(sigs), CHUNK):
        chunk = sigs[k:k + CHUNK]
        c = ['#include "abi.h"\n']
        for s in chunk:
            body = ['abi_begin(%d);' % s.n]
            for i, t in enumerate(s.params):
                body.append('abi_sep(); ' + leaf_code(t, '(char*)&a%d' % i, 'T'))
            body.append('uint64_t st_ = abi_seed(); uint64_t* st = &st_;')
            if s.ret is None:
                body.append('(void)st;')
            else:
                body.append('%s r; memset(&r, 0, sizeof r); %s return r;'
                            % (ctype(s.ret), leaf_code(s.ret, '(char*)&r', 'F')))
            c.append('%s {\n  %s\n}\n' % (proto(s), '\n  '.join(body)))
            call = call_expr(s, 'fp')
            got = call + ';' if s.ret is None else '%s r = %s;' % (ctype(s.ret), call)
            c.append('void cb%d(Cb%d_t fp) {\n  %s\n  %s\n  abi_ret_begin(); %s abi_ret_end();\n}\n'
                     % (s.n, s.n, arg_decls(s), got, trace_ret(s.ret, 'r')))
        name = 'callee_%d.c' % (k // CHUNK)
        files[name] = ''.join(c)
        callee_files.append(name)
        # The caller: the compiler's own call of each function, then the reverse
        # direction with the C function itself as the callback.
        c = ['#include "abi.h"\n', 'void run_%d(void) {\n' % (k // CHUNK)]
        for s in chunk:
            call = call_expr(s, 'f%d' % s.n)
            got = call + ';' if s.ret is None else '%s r = %s;' % (ctype(s.ret), call)
            c.append('  { abi_reset(); %s\n    %s\n    abi_ret_begin(); %s abi_ret_end(); abi_emit(%d, \'F\');\n'
                     '    abi_reset(); cb%d(f%d); abi_emit(%d, \'C\'); }\n'
                     % (arg_decls(s), got, trace_ret(s.ret, 'r'), s.n, s.n, s.n, s.n))
        c.append('}\n')
        name = 'caller_%d.c' % (k // CHUNK)
        files[name] = ''.join(c)
        caller_files.append(name)
    nruns = (len(sigs) + CHUNK - 1) // CHUNK
    m = ['#include "abi.h"\n#include <stdio.h>\n']
    m += ['void run_%d(void);\n' % i for i in range(nruns)]
    m.append('int main(void) {\n')
    # Layout lines: what this compiler says of every record (sizeof, alignof, offsetof).
    for r in recs:
        m.append('  printf("L %s %%zu %%zu%s\\n", sizeof(%s), _Alignof(%s)%s);\n'
                 % (r.name, ' %zu' * len(r.fields), r.name, r.name,
                    ''.join(', offsetof(%s, %s)' % (r.name, fn) for fn, _ in r.fields)))
    m += ['  run_%d();\n' % i for i in range(nruns)]
    m.append('  return 0;\n}\n')
    files['caller_main.c'] = ''.join(m)
    for name, text in files.items():
        with open(os.path.join(out, name), 'w') as f:
            f.write(text)
    return {'lib': ['abi_rt.c'] + sorted(n for n in files if n.startswith('types_')) + callee_files,
            'caller': ['caller_main.c'] + caller_files}


# ---- output: typemap and matrix description ------------------------------------------------

def tm_type(t):
    """A type expression of the typemap; matrix.json describes types the same way."""
    if isinstance(t, Prim):
        return t.tm
    if isinstance(t, Array):
        return {'array': tm_type(t.elem), 'count': t.count}
    return t.name


def write_json(out, sigs, pool, seed, count):
    types = {}
    for r in pool.records:
        entry = {r.kind: [{'name': fn, 'type': tm_type(ft)} for fn, ft in r.fields]}
        if r.pack:
            entry['pack'] = r.pack
        types[r.name] = entry
    functions, callbacks = {}, {}
    for s in sigs:
        params = [{'name': 'a%d' % i, 'type': tm_type(t)} for i, t in enumerate(s.params)]
        ret = 'void' if s.ret is None else tm_type(s.ret)
        functions['f%d' % s.n] = {'returns': ret, 'params': params}
        callbacks['Cb%d' % s.n] = {'returns': ret, 'params': params}
        functions['cb%d' % s.n] = {'returns': 'void',
                                   'params': [{'name': 'fp', 'type': {'callback': 'Cb%d' % s.n, 'scope': 'call'}}]}
    typemap = {'typemap': 1, 'library': {'name': 'abimatrix', 'load': {'linux': ['libabimatrix.so']}},
               'types': types, 'callbacks': callbacks, 'functions': functions}
    with open(os.path.join(out, 'typemap.json'), 'w') as f:
        json.dump(typemap, f, indent=None, separators=(',', ':'))
    prims = {p.tm: {'kind': p.kind, 'size': p.size, 'signed': p.signed} for p in PRIMS}
    records = {r.name: {'kind': r.kind, 'pack': r.pack, 'active': r.active, 'size': r.size, 'align': r.align,
                        'offsets': r.offsets,
                        'fields': [{'name': fn, 'type': tm_type(ft)} for fn, ft in r.fields]} for r in pool.records}
    fns = [{'n': s.n, 'proto': proto(s), 'ret': None if s.ret is None else tm_type(s.ret),
            'params': [tm_type(t) for t in s.params], 'args': s.values, 'tags': s.tags} for s in sigs]
    with open(os.path.join(out, 'matrix.json'), 'w') as f:
        json.dump({'seed': seed, 'count': count, 'machine': MACHINE, 'prims': prims, 'records': records,
                   'functions': fns}, f, separators=(',', ':'))


def generate(out, seed, count):
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    pool = Pool(rng, count)
    sigs = []
    for n in range(count):
        s = draw_signature(n, rng, pool)
        s.values = [draw_value(t, rng) for t in s.params]
        sigs.append(s)
    sources = write_c(out, sigs, pool)
    write_json(out, sigs, pool, seed, count)
    return sources, len(pool.records)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--count', type=int, default=1500)
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    sources, nrec = generate(a.out, a.seed, a.count)
    print('gen_matrix: seed %d: %d signatures, %d records, %d C files in %s'
          % (a.seed, a.count, nrec, len(sources['lib']) + len(sources['caller']), a.out))


if __name__ == '__main__':
    main()
