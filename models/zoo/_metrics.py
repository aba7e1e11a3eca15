"""Task metrics computed from model outputs and ground truth (never from agreement with FP32)."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    pred, labels = np.asarray(pred).reshape(-1), np.asarray(labels).reshape(-1)
    return float((pred == labels).mean()) if len(labels) else float("nan")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels).reshape(-1).astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` (n,4) and ``b`` (m,4), both x1,y1,x2,y2."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_counts(pred: np.ndarray, gt: np.ndarray, thr: float = 0.5) -> tuple[int, int, int]:
    """(true positives, predictions, ground-truth boxes) with greedy one-to-one IoU matching."""
    pred, gt = np.asarray(pred).reshape(-1, 4), np.asarray(gt).reshape(-1, 4)
    if len(pred) == 0 or len(gt) == 0:
        return 0, len(pred), len(gt)
    m = iou(pred, gt)
    tp = 0
    while True:
        i, j = np.unravel_index(np.argmax(m), m.shape)
        if m[i, j] < thr:
            break
        tp += 1
        m[i, :] = -1
        m[:, j] = -1
    return tp, len(pred), len(gt)


def f1(tp: int, n_pred: int, n_gt: int) -> float:
    if n_pred + n_gt == 0:
        return 1.0
    return 2.0 * tp / (n_pred + n_gt)


def nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        if len(order) == 1:
            break
        rest = order[1:]
        order = rest[iou(boxes[i:i + 1], boxes[rest])[0] <= thr]
    return keep


def ctc_greedy(probs: np.ndarray, charset: list[str], blank: int = 0) -> list[str]:
    """Greedy CTC decoding of (batch, time, classes) scores: best path, repeats merged, blanks dropped."""
    best = np.asarray(probs).argmax(-1)
    out = []
    for row in best:
        chars, prev = [], -1
        for k in row.tolist():
            if k != prev and k != blank and k < len(charset):
                chars.append(charset[k])
            prev = k
        out.append("".join(chars))
    return out


def exact_match(pred: list[str], truth: list[str]) -> float:
    return float(np.mean([p == t for p, t in zip(pred, truth)])) if truth else float("nan")
