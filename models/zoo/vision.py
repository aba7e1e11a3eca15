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

    xc, _, _ = make(32, 11)
    xe, be, ce = make(80, 12)
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
    min_fp32=0.6, needs=("PIL",),
))
