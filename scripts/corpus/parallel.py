#!/usr/bin/env python3
"""Build the multilingual parallel corpus (and its test sample) as JSONL.

Called by parallel.sh, which fetches and verifies the sources; this file only reads
already-extracted ones.  Standard library only (Python >= 3.8).

Two outputs, one JSON object per line:

  parallel-bible.jsonl   one verse per line: World English Bible and King James (en),
                         Reina-Valera 1909 (es), aligned by verse reference
  parallel-debian.jsonl  one package description per line: the English text and its
                         DDTP translations, aligned exactly by Description-md5 (the md5 of
                         the English description every translation carries)

Fields: id (unique), key (the alignment key: records with the same key are translations
of each other), lang (ISO 639-1, with pt_BR / zh_CN as Debian writes them), source,
text; Bible lines also have doc (the chapter, for documents of verses), Debian lines
title (the one-line short description) and package (the first package, by name, that
carries the description).  See scripts/corpus/README.md.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import time
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus import NOTE, PB, norm_para, web_clean  # noqa: E402

DEBIAN_LANGS = ['da', 'it', 'fr', 'de', 'pt_BR', 'ja', 'ko', 'uk', 'pl', 'ru', 'cs', 'es',
                'zh_CN']
# languages written without spaces between words: wrapped lines join without one
UNSPACED = {'ja', 'zh_CN'}
# (variant, lang, source)
BIBLES = [('en-web', 'en', 'bible-web'), ('en-kjv', 'en', 'bible-kjv'),
          ('es-rv1909', 'es', 'bible-rv1909')]

# --------------------------------------------------------------------------------------
# Bible verses
# --------------------------------------------------------------------------------------

_BOOK_END = re.compile(r'<div\b(?=[^>]*\beID=)(?=[^>]*\btype="book")[^>]*/>')


def read_verses(imp_path):
    """{(book, chapter, verse): text} and the order of the references."""
    with open(imp_path, encoding='utf-8') as f:
        raw = f.read()
    parts = re.split(r'^\$\$\$(.*)\n', raw, flags=re.M)
    verses, order = {}, []
    for key, body in zip(parts[1::2], parts[2::2]):
        m = re.fullmatch(r'(.+) (\d+):(\d+)', key.strip())
        if not m:
            continue
        ref = (m.group(1), int(m.group(2)), int(m.group(3)))
        if ref[1] == 0 or ref[2] == 0:
            continue  # introductions and headings
        body = _BOOK_END.split(body, 1)[0]
        s = web_clean(body).replace(NOTE, ' ').replace(PB, ' ')
        s = s.replace('\u00b6', ' ')  # KJV's pilcrow paragraph marks
        s = norm_para(s)
        if not s:
            continue
        if ref not in verses:
            order.append(ref)
        verses[ref] = s
    if len(verses) < 30000:
        sys.exit('%s: expected ~31,000 verses, found %d' % (imp_path, len(verses)))
    return verses, order


def book_slug(book):
    return '-'.join(book.replace('(', '').replace(')', '').split())


def build_bible(a):
    texts = {}
    order = None
    for variant, _, _ in BIBLES:
        path = getattr(a, variant.replace('-', '_'))
        texts[variant], o = read_verses(path)
        if variant == 'en-web':
            order = o
    common = [r for r in order if all(r in texts[v] for v, _, _ in BIBLES)]
    out = []
    for book, ch, vs in common:
        key = 'bible/%s/%d/%d' % (book_slug(book), ch, vs)
        doc = 'bible/%s/%d' % (book_slug(book), ch)
        for variant, lang, source in BIBLES:
            out.append({'id': '%s/%s' % (key, variant), 'key': key, 'lang': lang,
                        'source': source, 'doc': doc, 'text': texts[variant][(book, ch, vs)]})
    missing = {v: len(texts[v]) - len(common) for v, _, _ in BIBLES}
    return out, len(common), missing


# --------------------------------------------------------------------------------------
# Debian package descriptions (DDTP)
# --------------------------------------------------------------------------------------

def read_translation(path, lang):
    """{md5: (packages, short, long_lines)} from one Translation-<lang> file."""
    field = 'Description-%s: ' % lang
    entries = {}
    with open(path, encoding='utf-8', errors='replace') as f:
        blocks = f.read().split('\n\n')
    for block in blocks:
        pkg = md5 = short = None
        long_lines = []
        in_desc = False
        for line in block.split('\n'):
            if line.startswith('Package: '):
                pkg, in_desc = line[9:].strip(), False
            elif line.startswith('Description-md5: '):
                md5, in_desc = line[17:].strip(), False
            elif line.startswith(field):
                short, in_desc = line[len(field):].strip(), True
            elif in_desc and line.startswith(' '):
                long_lines.append(line)
            else:
                in_desc = False
        if not (pkg and md5 and short is not None):
            continue
        if md5 in entries:
            entries[md5][0].append(pkg)
        else:
            entries[md5] = ([pkg], short, long_lines)
    return entries


def english_md5(short, long_lines):
    """The md5 Debian computes over the English description (short line, long lines)."""
    raw = short + '\n' + ''.join(l + '\n' for l in long_lines)
    return hashlib.md5(raw.encode('utf-8')).hexdigest()


_BULLET = re.compile(r'^\s*(?:[-*+o\u2022]|\d+[.)])\s+')


def _wide(ch):
    return unicodedata.east_asian_width(ch) in ('W', 'F')


def join_lines(lines, spaced):
    """Joins wrapped lines with a space; for languages written without spaces (ja,
    zh_CN), without one where a wide character meets a wide character."""
    out = ''
    for line in lines:
        if out and line and (spaced or not (_wide(out[-1]) and _wide(line[0]))):
            out += ' '
        out += line
    return out


def long_text(lines, spaced=True):
    """A Debian long description as paragraphs: ' .' separates paragraphs, lines with
    more than one leading space are verbatim (lists, code) and become their own
    paragraphs (list markers dropped), the rest is filled text."""
    paras, cur = [], []

    def flush():
        if cur:
            paras.append(join_lines(cur, spaced))
            cur.clear()

    for line in lines:
        body = line[1:]
        if body.strip() == '.':
            flush()
        elif body.startswith(' '):
            flush()
            paras.append(_BULLET.sub('', body).strip())
        else:
            cur.append(body.strip())
    flush()
    out = [norm_para(p) for p in paras]
    return '\n\n'.join(p for p in out if p)


def build_debian(a):
    en = read_translation(a.translation_en, 'en')
    checked = sum(1 for md5, (_, s, l) in en.items() if english_md5(s, l) == md5)
    trans = {}
    for lang in DEBIAN_LANGS:
        path = getattr(a, 'translation_' + lang.lower())
        trans[lang] = read_translation(path, lang)
    keys = sorted({m for t in trans.values() for m in t if m in en},
                  key=lambda m: (sorted(en[m][0])[0], m))
    out, counts, orphans = [], {l: 0 for l in ['en'] + DEBIAN_LANGS}, {}
    for lang in DEBIAN_LANGS:
        orphans[lang] = sum(1 for m in trans[lang] if m not in en)
    for md5 in keys:
        pkgs, short, long_lines = en[md5]
        key = 'debian/%s' % md5
        package = sorted(pkgs)[0]
        rows = [('en', short, long_lines)]
        rows += [(lang, trans[lang][md5][1], trans[lang][md5][2])
                 for lang in DEBIAN_LANGS if md5 in trans[lang]]
        for lang, s, l in rows:
            title = norm_para(s)
            if not title:
                continue
            out.append({'id': '%s/%s' % (key, lang), 'key': key, 'lang': lang,
                        'source': 'debian-ddtp', 'package': package, 'title': title,
                        'text': long_text(l, lang not in UNSPACED)})
            counts[lang] += 1
    return out, counts, orphans, (checked, len(en))


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------

def write_jsonl_atomic(path, rows):
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'w', encoding='utf-8', newline='\n') as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + '\n')
    os.replace(tmp, path)


def cmd_build(a):
    t0 = time.time()
    os.makedirs(a.out_dir, exist_ok=True)
    bible, verses, missing = build_bible(a)
    path = os.path.join(a.out_dir, 'parallel-bible.jsonl')
    write_jsonl_atomic(path, bible)
    print('bible: %d verses in all three texts (%s left out: not in all three); wrote %s '
          '(%d bytes)' % (verses, ', '.join('%s %d' % kv for kv in missing.items()), path,
                          os.path.getsize(path)))
    debian, counts, orphans, (checked, total) = build_debian(a)
    path = os.path.join(a.out_dir, 'parallel-debian.jsonl')
    write_jsonl_atomic(path, debian)
    print('debian: English descriptions whose md5 re-computes: %d of %d' % (checked, total))
    print('debian: descriptions per language (English: those with >= 1 translation):')
    for lang, n in counts.items():
        extra = '' if lang == 'en' else '  (%d translations of no current English text)' \
            % orphans[lang]
        print('  %-6s %6d%s' % (lang, n, extra))
    print('wrote %s (%d bytes) in %.1f s' % (path, os.path.getsize(path), time.time() - t0))


def cmd_sample(a):
    """Deterministic small sample: Bible chapters and Debian descriptions picked by the
    smallest sha256 of their key among the short ones (Debian: translated into the most
    languages)."""
    with open(a.bible, encoding='utf-8') as f:
        bible = [json.loads(l) for l in f]
    with open(a.debian, encoding='utf-8') as f:
        debian = [json.loads(l) for l in f]
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()
    chapters = {}
    for r in bible:
        chapters.setdefault(r['doc'], []).append(r)
    small = [d for d, rs in chapters.items() if 3 * 8 <= len(rs) <= 3 * 14]
    picked_docs = set(sorted(small, key=h)[:a.bible_chapters])
    rows = [r for r in bible if r['doc'] in picked_docs]
    by_key = {}
    for r in debian:
        by_key.setdefault(r['key'], []).append(r)
    cands = [k for k, rs in by_key.items()
             if max(len(r['text'].encode()) for r in rs) <= a.max_description_bytes
             and all(r['text'] for r in rs)]
    cands.sort(key=lambda k: (-len(by_key[k]), h(k)))
    picked_keys = set(cands[:a.debian_descriptions])
    rows += [r for r in debian if r['key'] in picked_keys]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    write_jsonl_atomic(a.out, rows)
    size = os.path.getsize(a.out)
    if size > 200 * 1024:
        sys.exit('sample too large: %d bytes' % size)
    langs = sorted({r['lang'] for r in rows})
    print('wrote %s: %d records (%d Bible chapters, %d Debian descriptions), %d languages, '
          '%d bytes' % (a.out, len(rows), len(picked_docs), len(picked_keys), len(langs), size))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    b = sub.add_parser('build')
    for variant, _, _ in BIBLES:
        b.add_argument('--' + variant, required=True, help='mod2imp export')
    b.add_argument('--translation-en', required=True)
    for lang in DEBIAN_LANGS:
        b.add_argument('--translation-' + lang.lower(), required=True)
    b.add_argument('--out-dir', required=True)
    s = sub.add_parser('sample')
    s.add_argument('--bible', required=True)
    s.add_argument('--debian', required=True)
    s.add_argument('--out', required=True)
    s.add_argument('--bible-chapters', type=int, default=2)
    s.add_argument('--debian-descriptions', type=int, default=12)
    s.add_argument('--max-description-bytes', type=int, default=700)
    a = ap.parse_args()
    {'build': cmd_build, 'sample': cmd_sample}[a.cmd](a)


if __name__ == '__main__':
    unicodedata.normalize('NFC', '')  # fail early on a broken Python
    main()
