#!/bin/sh
# Builds a plain-English training corpus for the small Llama-style pair (issue 8) from Debian packages.
#
#   scripts/make_corpus.sh [OUT_DIR]        (default: .lm/corpus)
#
# Downloads documentation packages with `apt-get download` (run `apt-get update` once first), extracts them with
# `dpkg-deb -x` into a temporary folder, and turns the English documents into plain text: HTML without tags,
# reStructuredText / POD / AsciiDoc / Info as they are, fortunes one per paragraph. Each source file is one document;
# documents are taken in sorted path order, and every 50th (2%) goes to valid.txt, the rest to train.txt. Documents are
# separated by a line holding only a form feed character (\f), which train_lm.py splits on.
# The output is deterministic for a given set of package versions (printed in OUT_DIR/SOURCES).
set -eu
OUT=${1:-.lm/corpus}
PACKAGES="python3.11-doc perl-doc debian-handbook debian-reference-en maint-guide developers-reference git-doc \
gnu-standards bash-doc jargon-text fortunes linux-doc-6.1 debian-policy"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/debs" "$TMP/root" "$OUT"
(cd "$TMP/debs" && apt-get download $PACKAGES >/dev/null)
for deb in "$TMP"/debs/*.deb; do dpkg-deb -x "$deb" "$TMP/root"; done
(cd "$TMP/debs" && ls *.deb) > "$OUT/SOURCES"
python3 - "$TMP/root" "$OUT" <<'PY'
import gzip, html.parser, os, re, sys

root, out = sys.argv[1], sys.argv[2]

# (glob-like regular expression over the path under root, reader) — English documents only.
RULES = [
    (r'usr/share/doc/python3\.11/html/_sources/(?!whatsnew/changelog).*\.rst\.txt', 'text'),
    (r'usr/share/perl/5\.36\.0/pod/.*\.pod', 'pod'),
    (r'usr/share/doc/debian-handbook/html/en-US/[^/]*\.html', 'html'),
    (r'usr/share/debian-reference/[^/]*\.en\.html', 'html'),
    (r'usr/share/doc/maint-guide/html/[^/]*\.en\.html', 'html'),
    (r'usr/share/developers-reference/developers-reference\.txt\.gz', 'text'),
    (r'usr/share/doc/git-doc/[^/]*\.txt', 'text'),
    (r'usr/share/info/(standards|maintain)\.info.*', 'info'),
    (r'usr/share/doc/bash/bashref\.html', 'html'),
    (r'usr/share/doc/jargon-text/jargon\.txt.*', 'text'),
    (r'usr/share/games/fortunes/[a-z-]+', 'fortune'),
    (r'usr/share/doc/linux-doc-6\.1/html/_sources/(?!translations/).*\.rst\.txt(\.gz)?', 'text'),
    (r'usr/share/doc/debian-policy/policy\.html/_sources/.*\.rst\.txt(\.gz)?', 'text'),
]
RULES = [(re.compile(p + r'$'), kind) for p, kind in RULES]


class TextOf(html.parser.HTMLParser):
    BLOCK = {'p', 'div', 'br', 'li', 'tr', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'pre', 'dt', 'dd', 'table', 'section'}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ('script', 'style', 'head'):
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append('\n\n' if tag != 'br' else '\n')

    def handle_endtag(self, tag):
        if tag in ('script', 'style', 'head'):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append('\n\n')

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def read(path):
    raw = gzip.open(path).read() if path.endswith('.gz') else open(path, 'rb').read()
    return raw.decode('utf-8', errors='replace')


def clean(text):
    lines = [re.sub(r'[ \t]+', ' ', l).strip() for l in text.replace('\r', '').split('\n')]
    text = '\n'.join(lines)
    return re.sub(r'\n{3,}', '\n\n', text).strip()


def documents(path, kind):
    text = read(path)
    if kind == 'html':
        p = TextOf()
        p.feed(text)
        text = ''.join(p.parts)
    elif kind == 'pod':
        text = '\n'.join(l for l in text.split('\n') if not re.match(r'=(cut|begin|end|for|pod|over|back|encoding)', l))
    elif kind == 'info':
        text = text.replace('\x1f', '\n')
    if kind == 'fortune':
        # One document per fortune file; fortunes are separated by lines holding '%'.
        text = '\n\n'.join(f.strip() for f in re.split(r'\n%\n', text) if f.strip())
    yield clean(text)


docs = []
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
        full = os.path.join(dirpath, name)
        rel = os.path.relpath(full, root)
        kind = next((k for pattern, k in RULES if pattern.match(rel)), None)
        if kind is None or os.path.islink(full):
            continue
        for doc in documents(full, kind):
            ascii_share = sum(c < '\x80' for c in doc) / max(1, len(doc))
            if len(doc) >= 200 and ascii_share > 0.98:
                docs.append((rel, doc))
docs.sort()
counts = {'train': [0, 0], 'valid': [0, 0]}
with open(os.path.join(out, 'train.txt'), 'w') as train, open(os.path.join(out, 'valid.txt'), 'w') as valid:
    for i, (rel, doc) in enumerate(docs):
        split = 'valid' if i % 50 == 49 else 'train'
        (valid if split == 'valid' else train).write(doc + '\n\n\f\n\n')
        counts[split][0] += 1
        counts[split][1] += len(doc.encode())
for split, (n, size) in counts.items():
    print(f'{split}: {n} documents, {size / 1e6:.2f} MB')
PY
