"""OCR models: PaddleOCR's PP-OCR text-direction classifier, recogniser and detector as
shipped in the ``rapidocr-onnxruntime`` wheel, on text rendered with TrueType fonts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.zoo import Entry, register
from models.zoo._common import fonts, load_font, random_text
from models.zoo._metrics import accuracy, ctc_greedy, exact_match, f1, match_counts

RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
PADDLE_FIXUP = "the wheel's ONNX file; Paddle2ONNX's dim_value -1 on graph inputs/outputs rewritten as named dims"
SEED_CALIB, SEED_EVAL = 1, 2


def _paddle_model(source: Path, out_dir: Path, cache: Path) -> None:
    """The wheel's ONNX file with one fix-up: Paddle2ONNX writes ``dim_value: -1`` for dynamic
    dims, which the ONNX spec does not allow (dim_value must be >= 0) and which mpcompile's
    ``--input-shape`` rejects as a fixed dim of -1; they become named dims. Nothing else changes."""
    import onnx

    m = onnx.load(str(source))
    for vi in list(m.graph.input) + list(m.graph.output):
        for i, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.dim_param = f"{vi.name.split('/')[0].split('.')[0]}_dim{i}"
    onnx.save_model(m, str(out_dir / "model.onnx"))


# ------------------------------------------------------------------------------ rendering
def render_line(text: str, rng: np.random.RandomState, height: int | None = None):
    """``text`` on a light background in a random DejaVu face, size and colour, with a few
    pixels of margin, mild blur and noise: an RGB PIL image of one text line."""
    from PIL import Image, ImageDraw, ImageFilter

    font_paths = fonts()
    size = int(rng.randint(26, 40))
    font = load_font(font_paths[rng.randint(len(font_paths))], size)
    x0, y0, x1, y1 = font.getbbox(text)
    mx, my = int(rng.randint(4, 14)), int(rng.randint(3, 9))
    w, h = (x1 - x0) + 2 * mx, (y1 - y0) + 2 * my
    bg = tuple(int(v) for v in rng.randint(190, 256, 3))
    fg = tuple(int(v) for v in rng.randint(0, 80, 3))
    img = Image.new("RGB", (w, h), bg)
    ImageDraw.Draw(img).text((mx - x0, my - y0), text, font=font, fill=fg)
    if rng.rand() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.8))))
    arr = np.asarray(img, dtype=np.float32)
    arr = np.clip(arr + rng.randn(*arr.shape) * rng.uniform(0, 6), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if height:
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.BILINEAR)
    return img


def ppocr_line_tensor(img, width: int, height: int = 48) -> np.ndarray:
    """PaddleOCR's rec/cls preprocessing: resize to ``height`` keeping the aspect ratio (at most
    ``width``), BGR, (x/255 - 0.5)/0.5, zero-padded on the right to ``width``; CHW float32."""
    from PIL import Image

    w = min(width, int(np.ceil(height * img.width / img.height)))
    img = img.resize((w, height), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)[:, :, ::-1] / 255.0
    x = (x - 0.5) / 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :w] = x.transpose(2, 0, 1)
    return out


# ------------------------------------------------------------------------------ cls
def _cls_data(model: Path, out_dir: Path):
    def make(n, seed):
        rng = np.random.RandomState(seed)
        xs, ys = [], []
        for _ in range(n):
            img = render_line(random_text(rng, 16), rng)
            label = int(rng.rand() < 0.5)
            if label:
                img = img.rotate(180)
            xs.append(ppocr_line_tensor(img, 192))
            ys.append(label)
        return np.stack(xs), np.asarray(ys, np.int64)

    xc, _ = make(64, SEED_CALIB)
    xe, ye = make(200, SEED_EVAL)
    return {"x": xc}, {"x": xe, "labels": ye}


def _cls_score(outputs, ev) -> float:
    probs = next(iter(outputs.values()))
    return accuracy(probs.argmax(-1), ev["labels"])


register(Entry(
    name="ppocr_cls",
    families=("cnn-depthwise-hardswish",),
    description="PP-OCR mobile v2.0 text-direction classifier (MobileNetV3-small: depthwise convs, "
                "hard-swish as Clip/Mul/Div, hard-sigmoid SE blocks), 0° vs 180°",
    package=RAPIDOCR[0], version=RAPIDOCR[1],
    member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    inputs="x float32 (N,3,48,192): BGR text line, (x/255-0.5)/0.5, right-padded",
    metric_name="accuracy (0°/180° of rendered text lines)",
    make_model=_paddle_model, make_data=_cls_data, score=_cls_score, export=PADDLE_FIXUP,
    input_shapes={"x": (1, 3, 48, 192)},
    min_fp32=0.85, needs=("PIL",), recipe_version=2,
))


# ------------------------------------------------------------------------------ rec
def _charset(model: Path) -> list[str]:
    """The recogniser's dictionary from its ONNX metadata: blank, the characters, space."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    return ["<blank>"] + meta["character"].splitlines() + [" "]


def _rec_data(model: Path, out_dir: Path):
    def make(n, seed):
        rng = np.random.RandomState(seed)
        xs, texts = [], []
        for _ in range(n):
            text = random_text(rng, 18)
            xs.append(ppocr_line_tensor(render_line(text, rng), 320))
            texts.append(text)
        return np.stack(xs), texts

    xc, _ = make(64, SEED_CALIB)
    xe, te = make(150, SEED_EVAL)
    return {"x": xc}, {"x": xe, "texts": encode_texts(te), "charset": encode_charset(_charset(model))}


def encode_texts(texts: list[str], width: int = 32) -> np.ndarray:
    """Strings as int32 code points (N, width), 0-padded: npz-friendly ground truth."""
    out = np.zeros((len(texts), width), np.int32)
    for i, t in enumerate(texts):
        out[i, :len(t)] = [ord(c) for c in t[:width]]
    return out


def decode_texts(codes: np.ndarray) -> list[str]:
    return ["".join(chr(c) for c in row if c) for row in np.asarray(codes).tolist()]


def encode_charset(charset: list[str]) -> np.ndarray:
    """A CTC dictionary (index 0 = blank, one character per class) as int32 code points, blank = 0."""
    assert all(len(c) == 1 for c in charset[1:]), "multi-character dictionary entries"
    return np.asarray([0] + [ord(c) for c in charset[1:]], np.int32)


def _rec_score(outputs, ev) -> float:
    probs = next(iter(outputs.values()))
    charset = ["" if c == 0 else chr(c) for c in np.asarray(ev["charset"]).tolist()]
    # PaddleOCR's RecMetric compares with spaces removed (ignore_space=True); so do we.
    strip = [t.replace(" ", "") for t in ctc_greedy(probs, charset)]
    return exact_match(strip, [t.replace(" ", "") for t in decode_texts(ev["texts"])])


register(Entry(
    name="ppocr_rec",
    families=("ocr-ctc",),
    description="PP-OCRv4 mobile text recogniser (PPLCNetV3 + SVTR neck, CTC head over 6625 classes)",
    package=RAPIDOCR[0], version=RAPIDOCR[1],
    member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    inputs="x float32 (N,3,48,320): BGR text line, (x/255-0.5)/0.5, right-padded; output (N,40,6625) softmax",
    metric_name="exact match (greedy CTC decode of rendered text lines, spaces ignored)",
    make_model=_paddle_model, make_data=_rec_data, score=_rec_score, export=PADDLE_FIXUP,
    input_shapes={"x": (1, 3, 48, 320)},
    min_fp32=0.7, needs=("PIL",), recipe_version=2,
))


# ------------------------------------------------------------------------------ det
DET_MEAN = np.asarray([0.485, 0.456, 0.406], np.float32)
DET_STD = np.asarray([0.229, 0.224, 0.225], np.float32)
MAX_BOXES = 8


def render_page(rng: np.random.RandomState, height: int, width: int):
    """A page of ``height`` x ``width`` pixels with 2-6 non-overlapping text lines at random places
    on a light, slightly textured background; returns (RGB array, boxes (k,4) x1,y1,x2,y2 of the ink)."""
    from PIL import Image, ImageDraw

    font_paths = fonts()
    bg = rng.randint(200, 256, 3).astype(np.float32)
    grad = np.linspace(0, rng.uniform(-30, 30), width, dtype=np.float32)[None, :, None]
    base = np.clip(bg[None, None, :] + grad + rng.randn(height, width, 1) * 3, 0, 255).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.randint(2, 7))):
        for _attempt in range(20):
            text = random_text(rng, 16)
            font = load_font(font_paths[rng.randint(len(font_paths))], int(rng.randint(18, 34)))
            x0, y0, x1, y1 = font.getbbox(text)
            w, h = x1 - x0, y1 - y0
            if w >= width - 16:
                continue
            px, py = int(rng.randint(8, width - w - 8)), int(rng.randint(8, height - h - 8))
            box = (px, py, px + w, py + h)
            if any(not (box[2] + 6 < b[0] or b[2] + 6 < box[0] or box[3] + 6 < b[1] or b[3] + 6 < box[1]) for b in boxes):
                continue
            fg = tuple(int(v) for v in rng.randint(0, 90, 3))
            draw.text((px - x0, py - y0), text, font=font, fill=fg)
            boxes.append(box)
            break
    return np.asarray(img), np.asarray(boxes, np.float32).reshape(-1, 4)


def det_tensor(rgb: np.ndarray) -> np.ndarray:
    """PP-OCR det preprocessing: BGR, x/255, ImageNet mean/std, CHW (sides already multiples of 32)."""
    x = rgb[:, :, ::-1].astype(np.float32) / 255.0
    return ((x - DET_MEAN) / DET_STD).transpose(2, 0, 1).astype(np.float32)


def _det_data(model: Path, out_dir: Path):
    def make(n, seed, h, w):
        rng = np.random.RandomState(seed)
        xs, boxes = [], np.zeros((n, MAX_BOXES, 4), np.float32)
        counts = np.zeros(n, np.int64)
        for i in range(n):
            rgb, b = render_page(rng, h, w)
            xs.append(det_tensor(rgb))
            boxes[i, :len(b)] = b
            counts[i] = len(b)
        return np.stack(xs), boxes, counts

    xc, _, _ = make(24, SEED_CALIB, 320, 448)
    # evaluation at another size: the plan of a dynamic-shape model must hold for any H, W
    xe, be, ce = make(40, SEED_EVAL, 352, 512)
    return {"x": xc}, {"x": xe, "gt_boxes": be, "gt_counts": ce}


def db_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5, unclip: float = 1.6,
             min_size: float = 3.0) -> np.ndarray:
    """DBNet post-processing on one (H, W) probability map, with axis-aligned boxes: threshold,
    connected components, mean-score filter, then unclip each box by area*ratio/perimeter."""
    from scipy import ndimage

    labels, n = ndimage.label(prob > thresh)
    out = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        ys, xs = sl
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if min(h, w) < min_size:
            continue
        if prob[sl][labels[sl] == k].mean() < box_thresh:
            continue
        d = (w * h) * unclip / (2.0 * (w + h))
        out.append((xs.start - d, ys.start - d, xs.stop + d, ys.stop + d))
    return np.asarray(out, np.float32).reshape(-1, 4)


def _det_score(outputs, ev) -> float:
    maps = next(iter(outputs.values()))[:, 0]
    tp = n_pred = n_gt = 0
    for prob, gt, k in zip(maps, ev["gt_boxes"], ev["gt_counts"]):
        a, b, c = match_counts(db_boxes(prob), gt[:int(k)], 0.5)
        tp, n_pred, n_gt = tp + a, n_pred + b, n_gt + c
    return f1(tp, n_pred, n_gt)


register(Entry(
    name="ppocr_det",
    families=("dynamic-shape", "segmentation-fcn"),
    description="PP-OCRv4 mobile text detector (DBNet: PPLCNetV3 backbone, RSE-FPN, ConvTranspose head); "
                "input height and width are dynamic: calibrated at 320x448, evaluated at 352x512",
    package=RAPIDOCR[0], version=RAPIDOCR[1],
    member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    inputs="x float32 (N,3,H,W) dynamic, H and W multiples of 32: BGR page, ImageNet mean/std; "
           "output (N,1,H,W) text probability",
    metric_name="F1 of text-line boxes at IoU 0.5 (DB post-processing vs rendered boxes)",
    make_model=_paddle_model, make_data=_det_data, score=_det_score, export=PADDLE_FIXUP,
    input_shapes=None,
    min_fp32=0.8, needs=("PIL", "scipy"),
))
