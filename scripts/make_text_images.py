#!/usr/bin/env python3
"""Renders the sample text-line images used by the OCR example and tests (PIL + DejaVu fonts).
Usage: make_text_images.py OUTDIR"""
import os, sys
from PIL import Image, ImageDraw, ImageFont

LINES = {
    'hello.png': ('Hello webjit 2026', 'DejaVuSans.ttf'),
    'fox.png': ('The quick brown fox jumps', 'DejaVuSerif.ttf'),
    'invoice.png': ('Invoice No. 4821 Total 93.50', 'DejaVuSansMono.ttf'),
}

def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, (text, font) in LINES.items():
        f = ImageFont.truetype(os.path.join('/usr/share/fonts/truetype/dejavu', font), 36)
        l, t, r, b = f.getbbox(text)
        img = Image.new('RGB', (r - l + 24, b - t + 20), 'white')
        ImageDraw.Draw(img).text((12 - l, 10 - t), text, font=f, fill=(20, 20, 20))
        img.save(os.path.join(out, name), optimize=True)
        with open(os.path.join(out, name.replace('.png', '.txt')), 'w') as fh:
            fh.write(text + '\n')
    print('wrote', out)

if __name__ == '__main__':
    main()
