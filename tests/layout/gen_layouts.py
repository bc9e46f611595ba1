#!/usr/bin/env python3
"""marshal tests: random C records for the layout comparison (Python 3 stdlib only).

From a seed and a count, draws random structs and unions (nested named and anonymous
records, inline and 2-D arrays, every integer width and C platform type, float/double,
bools, pointers, inline strings, enums, bitfields of every width including zero-width
ones, #pragma pack(1/2/4/8/16), explicit `offset` layouts, flexible array members) and
writes the same records twice:

  - a C file whose program prints, for each record, sizeof, _Alignof and each field's
    offset and size (bitfields: the first bit and the width, found by setting the field
    to all ones in a zeroed object, since offsetof is not allowed on a bitfield);
  - the typemap JSON (tests/layout/layout_dump.cpp prints the engine's layout of it in
    the same line format; check_layouts.py compares the three).

Output lines (one per fact; nested anonymous records flattened as outer.inner):
  R NAME SIZE ALIGN
  F NAME PATH OFFSET SIZE        ordinary field (a flexible array member has size 0)
  B NAME PATH FIRST_BIT WIDTH    bitfield (bits counted from the start of the record)

Not generated, because the typemap cannot say it: unnamed bitfields of non-zero width
(every typemap field has a name; a C zero-width bitfield, which must be unnamed, is a
named `"bits": 0` field in the typemap), `aligned` attributes, anonymous members (C11
`struct { ... };` without a member name), long double and __int128.

Usage: gen_layouts.py --seed S --count N --out-c FILE --out-json FILE
"""
import argparse
import json
import random

# ---- primitive types: typemap name -> (C spelling, size, align, bitfield-capable) ----------
# x86-64 / AArch64 Linux (LP64). bool32 is Win32's BOOL (an int); {"bool": 2} is a short.
PRIMS = {
    'int8': ('int8_t', 1), 'uint8': ('uint8_t', 1), 'int16': ('int16_t', 2), 'uint16': ('uint16_t', 2),
    'int32': ('int32_t', 4), 'uint32': ('uint32_t', 4), 'int64': ('int64_t', 8), 'uint64': ('uint64_t', 8),
    'char': ('char', 1), 'schar': ('signed char', 1), 'uchar': ('unsigned char', 1),
    'short': ('short', 2), 'ushort': ('unsigned short', 2), 'int': ('int', 4), 'uint': ('unsigned', 4),
    'long': ('long', 8), 'ulong': ('unsigned long', 8), 'longlong': ('long long', 8),
    'ulonglong': ('unsigned long long', 8), 'size_t': ('size_t', 8), 'ssize_t': ('ssize_t', 8),
    'intptr_t': ('intptr_t', 8), 'uintptr_t': ('uintptr_t', 8), 'ptrdiff_t': ('ptrdiff_t', 8),
    'wchar_t': ('wchar_t', 4), 'char16_t': ('char16_t', 2), 'char32_t': ('char32_t', 4),
    'cbool': ('_Bool', 1), 'bool32': ('int', 4),
    'float': ('float', 4), 'double': ('double', 8), 'float32': ('float', 4), 'float64': ('double', 8),
    'pointer': ('void *', 8),
}
INTEGERS = [n for n in PRIMS if n not in ('float', 'double', 'float32', 'float64', 'pointer', 'cbool', 'bool32')]
# Bitfield base types: every integer, the bools, and an int-sized enum.
BITFIELD_TYPES = INTEGERS + ['cbool', 'bool32', 'E32', 'VB16']
ENUMS = {'E32': {'typemap': {'enum': {'E32_A': 0, 'E32_B': 1, 'E32_C': 2}, 'underlying': 'int32'},
                 'c': 'enum E32 { E32_A, E32_B, E32_C };', 'spell': 'enum E32', 'size': 4}}
VB16 = {'typemap': {'bool': 2, 'true': -1}, 'spell': 'short', 'size': 2}  # VARIANT_BOOL
STRINGS = {'utf8': ('char', 1), 'utf16': ('char16_t', 2), 'utf32': ('char32_t', 4), 'wchar': ('wchar_t', 4),
           'latin1': ('char', 1), 'bytes': ('char', 1)}
PACKS = [1, 2, 4, 8, 16]


def type_size(t):
    """(size, align) of a leaf type expression the generator itself places (explicit layouts)."""
    if isinstance(t, str):
        if t in PRIMS:
            s = PRIMS[t][1]
            return s, s
        if t in ENUMS:
            return 4, 4
        if t == 'VB16':
            return 2, 2
    if t[0] == 'array':
        s, a = type_size(t[1]) if isinstance(t[1], str) or t[1][0] != 'string' else (8, 8)
        return s * t[2], a
    if t[0] == 'string':
        u = STRINGS[t[1]][1]
        return u * t[2], u
    if t[0] in ('ptr', 'strptr', 'handle'):
        return 8, 8
    raise ValueError(t)


class Record:
    def __init__(self, name, kind, pack):
        self.name = name        # None: an anonymous inline record
        self.kind = kind        # 'struct' | 'union'
        self.pack = pack        # None or N
        self.fields = []        # [(name, type, bits, offset)]
        self.flexible = False   # ends in a flexible array member (not usable by value)
        self.pads = {}          # explicit layouts: field index -> padding bytes before it in C


class Gen:
    """Type expressions are tuples: a primitive/enum name (str), ('array', T, N),
    ('string', ENC, CAP) inline, ('strptr', ENC), ('ptr', T), ('handle',), ('rec', Record),
    ('flex', T, COUNTFIELD)."""

    def __init__(self, seed):
        self.r = random.Random(seed)
        self.records = []       # named records, in declaration order
        self.usable = []        # those usable by value (no flexible array member)

    # ---- drawing ---------------------------------------------------------------------------
    def leaf(self):
        r = self.r.random()
        if r < 0.62:
            return self.r.choice(list(PRIMS))
        if r < 0.68:
            return 'E32'
        if r < 0.71:
            return 'VB16'
        if r < 0.80:
            enc = self.r.choice(list(STRINGS))
            return ('string', enc, self.r.randint(1, 9)) if self.r.random() < 0.6 else ('strptr', enc)
        if r < 0.90:
            return ('ptr', self.r.choice(['int32', 'double', 'uint8']))
        return ('handle',)

    def field_type(self, depth, pack):
        r = self.r.random()
        if r < 0.12 and self.usable:
            return ('rec', self.r.choice(self.usable[-40:]))
        if r < 0.20 and depth < 2:
            return ('rec', self.record(None, depth + 1, pack))
        if r < 0.32:
            inner = self.field_type(depth + 1, pack) if depth < 2 and self.r.random() < 0.4 else self.leaf()
            # Zero-length arrays (a GNU extension gcc and clang share) keep their alignment.
            return ('array', inner, 0 if self.r.random() < 0.05 else self.r.randint(1, 5))
        return self.leaf()

    def bitfield(self):
        t = self.r.choice(BITFIELD_TYPES)
        width = 1 if t == 'cbool' else 8 * (4 if t in ('E32', 'bool32') else 2 if t == 'VB16' else PRIMS[t][1])
        r = self.r.random()
        if r < 0.15:
            bits = 0
        elif r < 0.25:
            bits = width
        else:
            bits = self.r.randint(1, width)
        return t, bits

    def record(self, name, depth, pack_of_parent=None):
        kind = 'union' if self.r.random() < 0.2 else 'struct'
        if name is None:
            # An anonymous record is declared inside its parent, so a #pragma pack
            # around the parent applies to it too: the typemap says so explicitly.
            pack = pack_of_parent
        else:
            pack = self.r.choice(PACKS) if self.r.random() < 0.35 else None
        rec = Record(name, kind, pack)
        nfields = self.r.randint(1, 4 if depth else 8)
        style = self.r.random()
        for i in range(nfields):
            fname = 'f%d' % i
            bitty = style < 0.45 and self.r.random() < (0.8 if style < 0.25 else 0.4)
            if bitty:
                t, bits = self.bitfield()
                if bits == 0:
                    fname = 'z%d' % i
                rec.fields.append((fname, t, bits, None))
            else:
                rec.fields.append((fname, self.field_type(depth, pack), None, None))
        if kind == 'struct' and name is not None and depth == 0 and self.r.random() < 0.08:
            # A flexible array member counted by an integer sibling.
            counts = [f[0] for f in rec.fields if f[1] in INTEGERS and f[2] is None]
            if not counts:
                rec.fields.insert(0, ('n', 'uint32', None, None))
                counts = ['n']
            rec.fields.append(('tail', ('flex', self.leaf_for_flex(), self.r.choice(counts)), None, None))
            rec.flexible = True
        return rec

    def leaf_for_flex(self):
        if self.usable and self.r.random() < 0.2:
            return ('rec', self.r.choice(self.usable[-40:]))
        return self.r.choice(list(PRIMS) + ['E32'])

    def explicit_record(self, name):
        """A struct whose fields (of sizes the generator knows) have some explicit offsets,
        ascending with gaps; C gets the same layout from padding arrays."""
        pack = self.r.choice(PACKS) if self.r.random() < 0.4 else None
        rec = Record(name, 'struct', pack)
        pos = 0
        for i in range(self.r.randint(1, 7)):
            t = self.leaf()
            if self.r.random() < 0.3:
                t = ('array', t, self.r.randint(1, 4))
            size, align = type_size(t)
            fa = min(align, pack) if pack else align
            natural = (pos + fa - 1) // fa * fa
            if self.r.random() < 0.6:
                off = natural + fa * self.r.choice([0, 0, 1, 2, 3, 7])
                rec.pads[i] = off - pos
                rec.fields.append(('f%d' % i, t, None, off))
                pos = off + size
            else:
                rec.fields.append(('f%d' % i, t, None, None))
                pos = natural + size
        # Fields after the last explicit offset continue from its end, whatever they are.
        if self.r.random() < 0.4:
            for i in range(len(rec.fields), len(rec.fields) + self.r.randint(1, 4)):
                if self.r.random() < 0.5:
                    t, bits = self.bitfield()
                    rec.fields.append(('z%d' % i if bits == 0 else 'f%d' % i, t, bits, None))
                else:
                    rec.fields.append(('f%d' % i, self.field_type(1, pack), None, None))
        return rec

    def generate(self, count):
        while len(self.records) < count:
            name = 'R%d' % len(self.records)
            if self.r.random() < 0.1:
                rec = self.explicit_record(name)
            else:
                rec = self.record(name, 0)
            self.records.append(rec)
            if not rec.flexible:
                self.usable.append(rec)
        return self.records


# ---- typemap JSON --------------------------------------------------------------------------
def tm_type(t):
    if isinstance(t, str):
        return VB16['typemap'] if t == 'VB16' else t
    k = t[0]
    if k == 'array':
        return {'array': tm_type(t[1]), 'count': t[2]}
    if k == 'string':
        return {'string': t[1], 'capacity': t[2]}
    if k == 'strptr':
        return {'string': t[1]}
    if k == 'ptr':
        return {'ptr': tm_type(t[1])}
    if k == 'handle':
        return 'H'
    if k == 'rec':
        return t[1].name if t[1].name else tm_record(t[1])
    if k == 'flex':
        return {'array': tm_type(t[1]), 'count': {'field': t[2]}}
    raise ValueError(t)


def tm_record(rec):
    out = {rec.kind: []}
    for name, t, bits, off in rec.fields:
        f = {'name': name, 'type': tm_type(t)}
        if bits is not None:
            f['bits'] = bits
        if off is not None:
            f['offset'] = off
        out[rec.kind].append(f)
    if rec.pack:
        out['pack'] = rec.pack
    return out


def typemap(records):
    types = {'E32': ENUMS['E32']['typemap'], 'H': {'handle': {}}}
    for rec in records:
        types[rec.name] = tm_record(rec)
    return {'typemap': 1, 'types': types}


# ---- C -------------------------------------------------------------------------------------
def c_decl(t, declarator, indent):
    """C declaration of a member of type t named by declarator."""
    if isinstance(t, str):
        if t in ENUMS:
            return ENUMS[t]['spell'] + ' ' + declarator
        if t == 'VB16':
            return VB16['spell'] + ' ' + declarator
        spell = PRIMS[t][0]
        return spell + ('' if spell.endswith('*') else ' ') + declarator
    k = t[0]
    if k == 'array':
        if not isinstance(t[1], str) and t[1][0] == 'string':
            # Only a struct field of string type is stored inline; an array element is a pointer.
            return c_decl(('strptr', t[1][1]), '%s[%d]' % (declarator, t[2]), indent)
        return c_decl(t[1], '%s[%d]' % (declarator, t[2]), indent)
    if k == 'string':
        return '%s %s[%d]' % (STRINGS[t[1]][0], declarator, t[2])
    if k == 'strptr':
        return '%s *%s' % (STRINGS[t[1]][0], declarator)
    if k == 'ptr':
        return c_decl(t[1], '*' + declarator, indent)
    if k == 'handle':
        return 'void *' + declarator
    if k == 'rec':
        rec = t[1]
        if rec.name:
            return '%s %s %s' % (rec.kind, rec.name, declarator)
        return c_body(rec, indent) + ' ' + declarator
    if k == 'flex':
        return c_decl(t[1], declarator + '[]', indent)
    raise ValueError(t)


def c_body(rec, indent):
    pad = '  ' * (indent + 1)
    lines = [rec.kind + (' ' + rec.name if rec.name else '') + ' {']
    for i, (name, t, bits, off) in enumerate(rec.fields):
        gap = rec.pads.get(i, 0)
        if gap:
            lines.append('%schar _pad%d[%d];' % (pad, i, gap))
        if bits == 0:
            lines.append('%s%s;  /* %s */' % (pad, c_decl(t, ': 0', indent + 1), name))
        elif bits is not None:
            lines.append('%s%s : %d;' % (pad, c_decl(t, name, indent + 1), bits))
        else:
            lines.append('%s%s;' % (pad, c_decl(t, name, indent + 1)))
    lines.append('  ' * indent + '}')
    return '\n'.join(lines)


def c_declaration(rec):
    body = c_body(rec, 0) + ';'
    if rec.pack:
        return '#pragma pack(push, %d)\n%s\n#pragma pack(pop)' % (rec.pack, body)
    return body


def facts(rec, prefix=''):
    """(macro, path) of a record's fields, flattened through anonymous records."""
    out = []
    for name, t, bits, off in rec.fields:
        path = prefix + name
        if bits == 0:
            continue  # a zero-width bitfield has no storage (and no name in C)
        if bits is not None:
            out.append(('B', path))
        elif not isinstance(t, str) and t[0] == 'flex':
            out.append(('FX', path))  # sizeof is not allowed on a flexible array member
        else:
            out.append(('F', path))
            if not isinstance(t, str) and t[0] == 'rec' and not t[1].name:
                out.extend(facts(t[1], path + '.'))
    return out


# The program is tables of constant expressions (offsetof, sizeof), which compile fast,
# plus one setter per bitfield.
C_PRELUDE = r"""/* Generated by tests/layout/gen_layouts.py: do not edit. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <uchar.h>
#include <wchar.h>

/* Not a constant, so setting a narrow bitfield to all ones is not folded or warned about. */
static volatile long long ones = -1;

struct fact { const char *path; size_t offset, size; void (*set)(void *); };
struct rec { const char *name; size_t size, align; const struct fact *facts; size_t n; };

#define F(T, m) {#m, offsetof(T, m), sizeof(((T *)0)->m), 0},
#define FX(T, m) {#m, offsetof(T, m), 0, 0},
#define B(T, m, setter) {#m, 0, 0, setter},
#define SET(T, m, setter) static void setter(void *p) { ((T *)p)->m = ones; }

enum E32 { E32_A, E32_B, E32_C };
"""

C_MAIN = r"""
int main(void) {
  for (size_t i = 0; i < sizeof recs / sizeof recs[0]; ++i) {
    const struct rec *r = &recs[i];
    printf("R %s %zu %zu\n", r->name, r->size, r->align);
    for (size_t k = 0; k < r->n; ++k) {
      const struct fact *f = &r->facts[k];
      if (!f->set) {
        printf("F %s %s %zu %zu\n", r->name, f->path, f->offset, f->size);
        continue;
      }
      /* offsetof is not allowed on a bitfield: set it to all ones in a zeroed object
         (with room after it, so a compiler that writes past its own sizeof shows bits
         out of range instead of crashing). */
      unsigned char *p = calloc(1, r->size + 64);
      long first = -1, width = 0;
      f->set(p);
      for (size_t b = 0; b < (r->size + 64) * 8; ++b)
        if (p[b / 8] & (1u << (b % 8))) {
          if (first < 0) first = (long)b;
          ++width;
        }
      free(p);
      printf("B %s %s %ld %ld\n", r->name, f->path, first, width);
    }
  }
  return 0;
}
"""


def c_program(records):
    parts = [C_PRELUDE]
    for rec in records:
        parts.append(c_declaration(rec))
    table = []
    setters = 0
    for rec in records:
        ty = '%s %s' % (rec.kind, rec.name)
        rows = []
        for macro, path in facts(rec):
            if macro == 'B':
                setters += 1
                parts.append('SET(%s, %s, s%d)' % (ty, path, setters))
                rows.append('B(%s, %s, s%d)' % (ty, path, setters))
            else:
                rows.append('%s(%s, %s)' % (macro, ty, path))
        if rows:
            parts.append('static const struct fact f_%s[] = {%s};' % (rec.name, ' '.join(rows)))
            table.append('  {"%s", sizeof(%s), _Alignof(%s), f_%s, %d},' % (rec.name, ty, ty, rec.name, len(rows)))
        else:
            table.append('  {"%s", sizeof(%s), _Alignof(%s), 0, 0},' % (rec.name, ty, ty))
    parts.append('static const struct rec recs[] = {\n' + '\n'.join(table) + '\n};')
    parts.append(C_MAIN)
    return '\n'.join(parts)


def generate(seed, count):
    """Returns (records, C text, typemap dict)."""
    recs = Gen(seed).generate(count)
    return recs, c_program(recs), typemap(recs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seed', type=int, required=True)
    ap.add_argument('--count', type=int, required=True)
    ap.add_argument('--out-c', required=True)
    ap.add_argument('--out-json', required=True)
    a = ap.parse_args()
    _, c, tm = generate(a.seed, a.count)
    with open(a.out_c, 'w') as f:
        f.write(c)
    with open(a.out_json, 'w') as f:
        json.dump(tm, f, indent=1)


if __name__ == '__main__':
    main()
