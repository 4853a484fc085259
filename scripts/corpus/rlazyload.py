"""Read R lazy-load databases (``.rdx``/``.rdb``) with the Python standard library.

R packages with ``LazyData: true`` ship their data sets as ``data/Rdata.rdx`` (an
index) and ``data/Rdata.rdb`` (the objects).  The index is a gzip- or zlib-compressed
R serialisation of ``list(variables=, references=, compressed=)`` where each
``variables`` entry is ``c(offset, length)`` into the ``.rdb`` file.  Each object in
the ``.rdb`` is a 4-byte big-endian uncompressed length, then (for compression
types 2/3) a one-byte method tag, then the compressed serialisation.

Only the XDR serialisation format (``X\\n``, versions 2 and 3) is supported, and only
the SEXP types that occur in plain data (vectors, lists, pairlists, attributes,
symbols, environments by reference, common ALTREP classes).  Closures and byte code
are not needed for data and are rejected with a clear error.

Values come back as plain Python objects: atomic vectors and lists as ``list``;
objects with attributes as ``RObject(value, attrs)`` (attrs is a dict).
"""

import bz2
import gzip
import lzma
import struct
import zlib

NILVALUE, REFSXP = 254, 255
PAIRLIST_TYPES = (2, 3, 5, 6, 17, 239, 240)  # LISTSXP CLOSXP PROMSXP LANGSXP DOTSXP ATTR*
NA_INTEGER = -(2 ** 31)


class RObject:
    """An R value carrying attributes (e.g. names, class)."""

    def __init__(self, value, attrs):
        self.value, self.attrs = value, attrs

    def __repr__(self):
        return 'RObject(%r, attrs=%r)' % (self.value, list(self.attrs))


class Symbol(str):
    """An R symbol (distinguished from a character string)."""


class _Reader:
    def __init__(self, data):
        self.b, self.p, self.refs = data, 0, []
        if data[:2] != b'X\n':
            raise ValueError('not an XDR R serialisation (header %r); only format X is '
                             'supported' % data[:2])
        self.p = 2
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            n = self.int()
            self.p += n  # native encoding name
        elif version != 2:
            raise ValueError('unsupported R serialisation version %d' % version)

    def int(self):
        v = struct.unpack_from('>i', self.b, self.p)[0]
        self.p += 4
        return v

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def attrs(self):
        pl = self.item()
        return dict(pl.value) if isinstance(pl, RObject) else {}

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        levels = flags >> 12
        has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
        if t == NILVALUE:
            return None
        if t in (241, 242, 250, 251, 252, 253):  # base/empty/global env, missing arg...
            return None
        if t == REFSXP:
            i = flags >> 8
            if i == 0:
                i = self.int()
            return self.refs[i - 1]
        if t in (247, 248, 249):  # PERSISTSXP, PACKAGESXP, NAMESPACESXP
            self.int()
            n = self.int()
            v = ('<namespace>', [self.item() for _ in range(n)])
            self.refs.append(v)
            return v
        if t == 1:  # SYMSXP
            v = Symbol(self.item() or '')
            self.refs.append(v)
            return v
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None  # NA_character_
            s = self.b[self.p:self.p + n]
            self.p += n
            return s.decode('latin-1' if levels & 4 else 'utf-8')
        if t in PAIRLIST_TYPES:
            items = []
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                items.append((tag, self.item()))
                flags = self.int()
                t2 = flags & 0xFF
                has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
                if t2 == NILVALUE:
                    break
                if t2 not in PAIRLIST_TYPES:  # dotted pair: CDR is not a pairlist
                    self.p -= 4
                    items.append((None, self.item()))
                    break
            return RObject(items, {})
        if t == 4:  # ENVSXP
            env = {}
            self.refs.append(env)
            self.int()  # locked
            env['enclos'] = self.item()
            env['frame'] = self.item()
            env['hashtab'] = self.item()
            env['attrib'] = self.item()
            return env
        if t == 238:  # ALTREP_SXP
            info, state = self.item(), self.item()
            attr = self.item()
            value = self._altrep(info, state)
            attrs = dict(attr.value) if isinstance(attr, RObject) else {}
            return RObject(value, attrs) if attrs else value
        if t in (10, 13):  # LGLSXP, INTSXP
            n = self.length()
            v = list(struct.unpack_from('>%di' % n, self.b, self.p))
            self.p += 4 * n
            v = [None if x == NA_INTEGER else x for x in v]
        elif t == 14:  # REALSXP
            n = self.length()
            v = list(struct.unpack_from('>%dd' % n, self.b, self.p))
            self.p += 8 * n
        elif t == 15:  # CPLXSXP
            n = self.length()
            r = struct.unpack_from('>%dd' % (2 * n), self.b, self.p)
            self.p += 16 * n
            v = [complex(r[2 * i], r[2 * i + 1]) for i in range(n)]
        elif t in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            n = self.length()
            v = [self.item() for _ in range(n)]
        elif t == 24:  # RAWSXP
            n = self.length()
            v = self.b[self.p:self.p + n]
            self.p += n
        else:
            raise ValueError('unsupported R SEXP type %d at byte %d (not plain data)'
                             % (t, self.p))
        if has_attr:
            return RObject(v, self.attrs())
        return v

    @staticmethod
    def _altrep(info, state):
        cls = None
        if isinstance(info, RObject) and info.value:
            cls = info.value[0][1]
        if cls in ('compact_intseq', 'compact_realseq'):
            n, start, inc = state[0], state[1], state[2]
            vals = [start + i * inc for i in range(int(n))]
            return [int(x) for x in vals] if cls == 'compact_intseq' else vals
        if cls and cls.startswith('wrap_'):
            return state[0] if isinstance(state, list) else state.value[0]
        if cls == 'deferred_string':
            arg = state.value[0][1] if isinstance(state, RObject) else state
            arg = arg.value if isinstance(arg, RObject) else arg
            return [None if x is None else (str(int(x)) if float(x).is_integer() else repr(x))
                    for x in arg]
        raise ValueError('unsupported ALTREP class %r' % (cls,))


def unserialize(data):
    """Unserialise one R object from bytes in XDR format."""
    return _Reader(data).item()


def _decompress_index(raw):
    if raw[:2] == b'\x1f\x8b':
        return gzip.decompress(raw)
    if raw[:2] == b'X\n':
        return raw
    return zlib.decompress(raw[4:])


def _decompress_blob(blob):
    ulen = struct.unpack('>I', blob[:4])[0]
    tag = blob[4:5]
    if tag == b'Z':
        body = zlib.decompress(blob[5:])
    elif tag == b'2':
        body = bz2.decompress(blob[5:])
    elif tag == b'X':
        body = lzma.decompress(blob[5:])
    elif tag == b'0':
        body = blob[5:]
    else:  # compress = TRUE: plain zlib after the length
        body = zlib.decompress(blob[4:])
    if len(body) != ulen:
        raise ValueError('R lazy-load object: expected %d bytes, got %d' % (ulen, len(body)))
    return body


def read_lazyload(rdx_path, rdb_path):
    """Return {name: value} for every variable in an R lazy-load database."""
    with open(rdx_path, 'rb') as f:
        index = unserialize(_decompress_index(f.read()))
    if not isinstance(index, RObject):
        raise ValueError('%s: unexpected index layout' % rdx_path)
    fields = dict(zip(index.attrs['names'], index.value))
    variables = fields['variables']
    with open(rdb_path, 'rb') as f:
        rdb = f.read()
    out = {}
    for name, (offset, length) in zip(variables.attrs['names'], variables.value):
        offset, length = int(offset), int(length)
        out[name] = unserialize(_decompress_blob(rdb[offset:offset + length]))
    return out
