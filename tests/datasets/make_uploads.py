# Makes upload bodies for tests/system/test_datasets.sh from the real MNIST and
# Fashion-MNIST files (never synthetic images), and hostile archives.
# usage: make_uploads.py KIND OUT [args...]
import gzip, io, os, struct, sys, tarfile, zipfile, zlib, random
def idx(path):
    op = gzip.open if path.endswith('.gz') else open
    with op(path, 'rb') as f: b = f.read()
    magic, n = struct.unpack('>II', b[:8])
    if magic == 0x803: return [b[16 + i*784:16 + (i+1)*784] for i in range(n)]
    return list(b[8:8+n])
def png(px, w=28, h=28):
    raw = b''.join(b'\0' + px[y*w:(y+1)*w] for y in range(h))
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FOLDERS = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
def per_class(imgs, labs, classes, k):
    got = {c: 0 for c in classes}; out = []
    for im, l in zip(imgs, labs):
        if l in got and got[l] < k: got[l] += 1; out.append((im, l))
    return out
what, out = sys.argv[1], sys.argv[2]
if what == 'fashion-idx':
    src = sys.argv[3]
    with tarfile.open(out, 'w:gz') as t:
        for f in sorted(os.listdir(src)): t.add(os.path.join(src, f), arcname=f)
        d = ('\n'.join(FASHION) + '\n').encode(); ti = tarfile.TarInfo('classes.txt'); ti.size = len(d); t.addfile(ti, io.BytesIO(d))
elif what == 'fashion-png':
    src, ntr, nte = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:
        for part, pre, k in (('train', 'train', ntr), ('test', 't10k', nte)):
            ims = idx(f'{src}/{pre}-images-idx3-ubyte.gz'); labs = idx(f'{src}/{pre}-labels-idx1-ubyte.gz')
            for i, (im, l) in enumerate(per_class(ims, labs, range(10), k)):
                z.writestr(f'fashion/{part}/{FOLDERS[l]}/{i}.png', png(im))
elif what == 'mnist-csv':
    src, n = sys.argv[3], int(sys.argv[4])
    ims = idx(f'{src}/train-images-idx3-ubyte'); labs = idx(f'{src}/train-labels-idx1-ubyte')
    with open(out, 'w') as f:
        f.write('label,' + ','.join(f'pixel{i}' for i in range(784)) + '\n')
        for im, l in list(zip(ims, labs))[:n]: f.write(str(l) + ',' + ','.join(map(str, im)) + '\n')
elif what == 'three-tar':  # 3 classes from MNIST, named, no test part, uncompressed tar
    src, k = sys.argv[3], int(sys.argv[4])
    names = {0: 'zero', 1: 'one', 7: 'seven'}
    ims = idx(f'{src}/train-images-idx3-ubyte'); labs = idx(f'{src}/train-labels-idx1-ubyte')
    with tarfile.open(out, 'w') as t:
        for i, (im, l) in enumerate(per_class(ims, labs, names, k)):
            d = png(im); ti = tarfile.TarInfo(f'train/{names[l]}/{i}.png'); ti.size = len(d); t.addfile(ti, io.BytesIO(d))
elif what == 'three-zip':  # the same 3 named classes as a small zip (browser test)
    src, k = sys.argv[3], int(sys.argv[4])
    names = {0: 'zero', 1: 'one', 7: 'seven'}
    ims = idx(f'{src}/train-images-idx3-ubyte'); labs = idx(f'{src}/train-labels-idx1-ubyte')
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:
        for i, (im, l) in enumerate(per_class(ims, labs, names, k)):
            z.writestr(f'digits/train/{names[l]}/{i}.png', png(im))
elif what == 'hostile':  # hostile archives into directory out
    src = sys.argv[3]
    im = idx(f'{src}/train-images-idx3-ubyte')[:4]
    good = [png(x) for x in im]
    def tar(name, members, mode='w'):
        with tarfile.open(os.path.join(out, name), mode) as t:
            for m in members:
                ti = tarfile.TarInfo(m[0])
                if m[1] == 'sym': ti.type = tarfile.SYMTYPE; ti.linkname = m[2]; t.addfile(ti)
                elif m[1] == 'hard': ti.type = tarfile.LNKTYPE; ti.linkname = m[2]; t.addfile(ti)
                elif m[1] == 'dir': ti.type = tarfile.DIRTYPE; t.addfile(ti)
                else: ti.size = len(m[1]); t.addfile(ti, io.BytesIO(m[1]))
    os.makedirs(out, exist_ok=True)
    base = [('train/a/0.png', good[0]), ('train/a/1.png', good[1]), ('train/b/2.png', good[2]), ('train/b/3.png', good[3])]
    tar('traversal.tar', base + [('train/a/../../../evil.png', good[0])])
    tar('absolute.tar', base + [('/tmp/evil.png', good[0])])
    tar('symlink.tar', base + [('train/a/link.png', 'sym', '/etc/passwd')])
    tar('hardlink.tar', base + [('train/a/hard.png', 'hard', 'train/a/0.png')])
    tar('case.tar', base + [('train/A/4.png', good[0])])
    tar('empty.tar', base + [('train/c/', 'dir')])
    tar('notpng.tar', base + [('train/b/x.png', b'\xff\xd8\xff\xe0' + b'JFIF' * 100)])
    tar('oneclass.tar', base[:2])
    with zipfile.ZipFile(os.path.join(out, 'bomb.zip'), 'w', zipfile.ZIP_DEFLATED) as z:
        for n, d in base: z.writestr(n, d)
        z.writestr('train/a/bomb.png', b'\0' * (64 << 20))
    tar('good.tar.gz', base, 'w:gz')
    d = open(os.path.join(out, 'good.tar.gz'), 'rb').read()
    open(os.path.join(out, 'truncated.tar.gz'), 'wb').write(d[:len(d) // 2])
    lab = struct.pack('>II', 0x801, 4) + bytes([0, 1, 2, 9])
    img = struct.pack('>IIII', 0x803, 4, 28, 28) + b''.join(im)
    with tarfile.open(os.path.join(out, 'idxrange.tar'), 'w') as t:
        for n, dd in (('train-images-idx3-ubyte', img), ('train-labels-idx1-ubyte', lab), ('classes.txt', b'x\ny\nz\n')):
            ti = tarfile.TarInfo(n); ti.size = len(dd); t.addfile(ti, io.BytesIO(dd))
    hdr = 'label,' + ','.join(f'pixel{i}' for i in range(784)) + '\n'
    rows = [str(l) + ',' + ','.join(map(str, x)) for l, x in zip([0, 1, 0, 1], im)]
    open(os.path.join(out, 'short.csv'), 'w').write(hdr + '\n'.join(rows[:2]) + '\n' + rows[2].rsplit(',', 1)[0] + '\n')
    open(os.path.join(out, 'range.csv'), 'w').write(hdr + '\n'.join(rows) + '\n300,' + ','.join(['0'] * 784) + '\n')
