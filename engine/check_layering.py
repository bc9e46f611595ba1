#!/usr/bin/env python3
"""The engine's layering: every file sits in a subsystem folder, and a folder's
files include only headers of their own folder or of folders below it (the
order is given lowest first). Prints each violation as FILE:LINE and exits 1."""
import argparse
import pathlib
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--root', required=True, help='the engine folder')
    ap.add_argument('--order', required=True, help='subsystem folders, lowest first, comma-separated')
    ap.add_argument('--stamp', help='written when the check passes')
    args = ap.parse_args()
    root = pathlib.Path(args.root)
    order = args.order.split(',')
    rank = {name: i for i, name in enumerate(order)}
    problems = []
    for path in sorted(root.iterdir()):
        if path.is_file() and path.name not in ('meson.build', 'README.md', 'check_layering.py'):
            problems.append(f'{path}: sits directly in engine/ (put it in a subsystem folder)')
        if path.is_dir() and path.name not in rank:
            problems.append(f'{path}: not a subsystem folder the build knows ({", ".join(order)})')
    for folder in order:
        for path in sorted((root / folder).rglob('*')):
            if path.suffix not in ('.hpp', '.cpp', '.h', '.c'):
                continue
            for n, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                target = m.group(1)
                top = target.split('/', 1)[0] if '/' in target else None
                if top is None:
                    if not (path.parent / target).exists():
                        problems.append(f'{path}:{n}: include "{target}" names no folder (write "{folder}/{target}")')
                    continue
                if top not in rank:
                    problems.append(f'{path}:{n}: include "{target}" is outside the engine\'s folders')
                elif rank[top] > rank[folder]:
                    problems.append(f'{path}:{n}: {folder}/ includes "{target}" from {top}/, a higher layer '
                                    f'(order, lowest first: {" < ".join(order)})')
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    if args.stamp:
        pathlib.Path(args.stamp).write_text('ok\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
