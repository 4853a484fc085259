#!/usr/bin/env python3
"""Build the summarisation pairs (and their test sample) as JSONL.

Called by summarisation.sh, which fetches and verifies the sources; this file only reads
already-extracted ones.  Standard library only (Python >= 3.8).

  build  --translation-en FILE --man-root DIR [--man-root DIR ...] --out-dir DIR
  sample --in-dir DIR --out-dir DIR [--train N --test N]

Outputs (one JSON object per line: id, package, source, prompt, answer):

  debian-{train,test}.jsonl    Debian package descriptions (bookworm 12.15 DDTP English
                               index): prompt = the long description, answer = the one-line
                               synopsis; one pair per distinct (long description, synopsis)
  debian5-{train,test}.jsonl   the pairs whose long description has >= 5 sentences
  man-{train,test}.jsonl       man pages of manpages and manpages-dev: prompt = the
                               DESCRIPTION section, answer = the NAME line's description

Held-out split (test): by package.  A Debian pair belongs to the package that carries its
long description first by name (packages of one source that share a long description, such
as libfoo1 and libfoo-dev, thus land in the same split, so no prompt is in both); a man page
is split by its page name (the two packages hold hundreds of pages each).  A key is in the
test split when the first 8 bytes of sha256(key), read as a fraction of 2^64, are below
--test-fraction (default 0.05).  The output is deterministic.
"""

import argparse
import gzip
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus import count_sentences, norm_para  # noqa: E402

MIN_SENTS_SUBSET = 5


def held_out(key, fraction):
    h = int.from_bytes(hashlib.sha256(key.encode('utf-8')).digest()[:8], 'big')
    return h / 2.0 ** 64 < fraction


# --------------------------------------------------------------------------------------
# Debian descriptions
# --------------------------------------------------------------------------------------

def read_translation(path):
    """[(package, synopsis, long description)] of a Translation-en index."""
    out = []
    with open(path, encoding='utf-8') as f:
        block = f.read().split('\n\n')
    for rec in block:
        pkg, desc, in_desc = None, [], False
        for line in rec.split('\n'):
            if line.startswith('Package: '):
                pkg = line[len('Package: '):].strip()
                in_desc = False
            elif line.startswith('Description-en: '):
                desc = [line[len('Description-en: '):]]
                in_desc = True
            elif in_desc and line.startswith(' '):
                desc.append(line[1:])
            else:
                in_desc = False
        if pkg and desc:
            out.append((pkg, desc[0].strip(), long_description(desc[1:])))
    return out


def long_description(lines):
    """Paragraphs of a long description: ' .' lines separate paragraphs; lines are joined."""
    paras, cur = [], []
    for line in lines:
        if line.strip() == '.':
            if cur:
                paras.append(cur)
            cur = []
        else:
            cur.append(line.strip())
    if cur:
        paras.append(cur)
    out = []
    for p in paras:
        text = norm_para(' '.join(p))
        if text:
            out.append(text)
    return '\n\n'.join(out)


def debian_pairs(path):
    records = read_translation(path)
    owner = {}  # long description -> first package by name
    for pkg, _, long in records:
        if long and (long not in owner or pkg < owner[long]):
            owner[long] = pkg
    seen, pairs = set(), []
    for pkg, syn, long in sorted(records):
        syn = norm_para(syn)
        if not long or not syn or (long, syn) in seen:
            continue
        seen.add((long, syn))
        pairs.append({'id': 'debian/' + pkg, 'package': owner[long], 'source': 'debian',
                      'prompt': long, 'answer': syn})
    return pairs


# --------------------------------------------------------------------------------------
# man pages
# --------------------------------------------------------------------------------------

_ESCAPES = [
    (re.compile(r'\\f(\[[^\]]*\]|\(..|.)'), ''),      # font changes
    (re.compile(r'\\\*(\(..|\[[^\]]*\]|.)'), '"'),   # strings (lq, rq, ...)
    (re.compile(r'\\\(em|\\\[em\]'), '\u2014'),
    (re.compile(r'\\\(en|\\\[en\]'), '\u2013'),
    (re.compile(r'\\\(aq|\\\[aq\]'), "'"),
    (re.compile(r'\\\(dq|\\\[dq\]'), '"'),
    (re.compile(r'\\\(bu|\\\[bu\]'), ''),
    (re.compile(r'\\\((..)|\\\[([^\]]*)\]'), ''),     # other special characters
    (re.compile(r'\\[-]'), '-'),
    (re.compile(r'\\[&|^%:]'), ''),
    (re.compile(r'\\ '), ' '),
    (re.compile(r'\\e'), '\\\\'),
    (re.compile(r'\\s[-+]?\d'), ''),
    (re.compile(r'\\c'), ''),
]
_FONT_MACROS = {'B', 'I', 'SM', 'SB', 'BR', 'RB', 'IR', 'RI', 'BI', 'IB', 'UR', 'MT'}
# requests that end a paragraph; every other request is dropped
_BREAK_MACROS = {'PP', 'P', 'LP', 'sp', 'RS', 'RE', 'nf', 'fi', 'EX', 'EE', 'br', 'SS', 'in'}


def unescape(s):
    for pat, rep in _ESCAPES:
        s = pat.sub(rep, s)
    return s.replace('\\', '')


def macro_args(rest):
    """Arguments of a roff request line: quoted strings or words."""
    return [a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"|\S+', rest)]


def roff_sections(text):
    """{section name: [paragraph text]} of a man page's roff source (crude but safe)."""
    sections, name, paras, cur = {}, None, [], []
    skip_table = False

    def flush():
        if cur:
            para = norm_para(' '.join(cur))
            if para:
                paras.append(para)
            cur.clear()

    for raw in text.split('\n'):
        line = raw.rstrip()
        if line.startswith('.\\"') or line.startswith("'\\\"") or line == '.':
            continue
        if line.startswith('.TS'):
            skip_table = True
            continue
        if line.startswith('.TE'):
            skip_table = False
            continue
        if skip_table:
            continue
        if line.startswith('.') or line.startswith("'"):
            m = re.match(r"[.'](\S+)\s*(.*)", line)
            if not m:
                continue
            mac, rest = m.group(1), m.group(2)
            if mac == 'SH':
                flush()
                if name is not None:
                    sections.setdefault(name, []).extend(paras)
                name, paras = ' '.join(macro_args(rest)).upper(), []
            elif mac in _FONT_MACROS:
                words = [unescape(a) for a in macro_args(rest)]
                joiner = '' if len(mac) == 2 and mac not in ('SM', 'SB', 'UR', 'MT') else ' '
                cur.append(joiner.join(words))
            elif mac in ('IP', 'TP', 'HP', 'TQ'):
                flush()
                args = macro_args(rest)
                if mac == 'IP' and args and args[0] not in ('\\(bu', '*', '-', '\\[bu]'):
                    cur.append(unescape(args[0]))
            elif mac in _BREAK_MACROS:
                flush()
        else:
            cur.append(unescape(line))
    flush()
    if name is not None:
        sections.setdefault(name, []).extend(paras)
    return sections


def read_man_page(path):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8', errors='replace') as f:
        return f.read()


def man_pairs(roots):
    pairs = []
    for package, root in roots:
        man = os.path.join(root, 'usr', 'share', 'man')
        for sec in sorted(os.listdir(man)):
            if not re.fullmatch(r'man\d\w*', sec):
                continue
            for fname in sorted(os.listdir(os.path.join(man, sec))):
                path = os.path.join(man, sec, fname)
                if os.path.islink(path):
                    continue
                text = read_man_page(path)
                if re.match(r'\.so\s', text):
                    continue  # an alias of another page
                page = re.sub(r'\.gz$', '', fname)
                sections = roff_sections(text)
                name_line = ' '.join(sections.get('NAME', []))
                m = re.search(r'\s[-\u2013\u2014]+\s+(.*)$', name_line)
                desc = sections.get('DESCRIPTION', [])
                if not m or not desc:
                    continue
                answer = norm_para(m.group(1))
                if answer and answer[0].islower():
                    answer = answer[0].upper() + answer[1:]
                prompt = '\n\n'.join(desc)
                if not answer or not prompt:
                    continue
                pairs.append({'id': 'man/%s/%s' % (sec[3:], page), 'package': package,
                              'source': 'man', 'page': page, 'prompt': prompt,
                              'answer': answer})
    return pairs


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------

def write_jsonl_atomic(path, rows):
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=False) + '\n')
    os.replace(tmp, path)


def split_write(out_dir, name, pairs, key, fraction):
    train = [p for p in pairs if not held_out(key(p), fraction)]
    test = [p for p in pairs if held_out(key(p), fraction)]
    write_jsonl_atomic(os.path.join(out_dir, name + '-train.jsonl'), train)
    write_jsonl_atomic(os.path.join(out_dir, name + '-test.jsonl'), test)
    print('%s: %d train, %d test pairs' % (name, len(train), len(test)), file=sys.stderr)
    return len(train), len(test)


def cmd_build(a):
    os.makedirs(a.out_dir, exist_ok=True)
    counts = {}
    deb = debian_pairs(a.translation_en)
    counts['debian'] = split_write(a.out_dir, 'debian', deb, lambda p: p['package'],
                                   a.test_fraction)
    deb5 = [p for p in deb if count_sentences(p['prompt']) >= MIN_SENTS_SUBSET]
    counts['debian5'] = split_write(a.out_dir, 'debian5', deb5, lambda p: p['package'],
                                    a.test_fraction)
    roots = [tuple(r.split('=', 1)) for r in a.man_root]
    man = man_pairs(roots)
    counts['man'] = split_write(a.out_dir, 'man', man, lambda p: p['page'], a.test_fraction)
    with open(os.path.join(a.out_dir, 'counts.json'), 'w') as f:
        json.dump({k: {'train': v[0], 'test': v[1]} for k, v in counts.items()}, f, indent=1)


def cmd_sample(a):
    """The committed test sample: the first N train and test pairs of debian5 with short
    prompts, and a few man pages, as train.jsonl / test.jsonl."""
    os.makedirs(a.out_dir, exist_ok=True)

    def take(name, n, max_chars):
        rows = []
        with open(os.path.join(a.in_dir, name), encoding='utf-8') as f:
            for line in f:
                r = json.loads(line)
                if len(r['prompt']) <= max_chars:
                    rows.append(r)
                if len(rows) == n:
                    break
        return rows

    train = take('debian5-train.jsonl', a.train, 700) + take('man-train.jsonl', a.train // 4, 900)
    test = take('debian5-test.jsonl', a.test, 700) + take('man-test.jsonl', a.test // 4, 900)
    write_jsonl_atomic(os.path.join(a.out_dir, 'train.jsonl'), train)
    write_jsonl_atomic(os.path.join(a.out_dir, 'test.jsonl'), test)
    print('sample: %d train, %d test' % (len(train), len(test)), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    b = sub.add_parser('build')
    b.add_argument('--translation-en', required=True)
    b.add_argument('--man-root', action='append', default=[],
                   help='PACKAGE=DIR of an unpacked manpages(-dev) .deb')
    b.add_argument('--out-dir', required=True)
    b.add_argument('--test-fraction', type=float, default=0.05)
    s = sub.add_parser('sample')
    s.add_argument('--in-dir', required=True)
    s.add_argument('--out-dir', required=True)
    s.add_argument('--train', type=int, default=40)
    s.add_argument('--test', type=int, default=12)
    a = ap.parse_args()
    {'build': cmd_build, 'sample': cmd_sample}[a.cmd](a)


if __name__ == '__main__':
    main()
