"""Images: :class:`ImagePreprocess` (decode, resize, crop, normalize, layout) and :class:`ImageFolderDataset`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.data.dataset import Dataset, _list_files
from mpcompile.data.specs import InputSpec, _check_positive, _convert, _dims_match, _is_static, _require_single_input
from mpcompile.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


_SizeSpec = int | tuple[int, int] | None


def _parse_size(key: str, value: str) -> int | tuple[int, int]:
    parts = re.split(r"[x:]", value.strip().lower())
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (1, 2) or any(n < 1 for n in nums):
        raise DataError(
            f"preprocess option {key}={value!r} is not a size; use one positive integer (e.g. {key}=224) "
            f"or height x width (e.g. {key}=224x224)"
        )
    return nums[0] if len(nums) == 1 else (nums[0], nums[1])


def _parse_floats(key: str, value: str) -> tuple[float, ...]:
    try:
        nums = tuple(_parse_float(key, v) for v in value.split(":"))
    except DataError:
        raise DataError(
            f"preprocess option {key}={value!r} is not a list of numbers; separate channels with ':' "
            f"(e.g. {key}=0.485:0.456:0.406)"
        ) from None
    return nums


def _parse_float(key: str, value: str) -> float:
    value = value.strip()
    try:
        if "/" in value:
            num, den = value.split("/", 1)
            return float(num) / float(den)
        return float(value)
    except (ValueError, ZeroDivisionError):
        raise DataError(f"preprocess option {key}={value!r} is not a number (e.g. {key}=0.5 or {key}=1/255)") from None


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on", ""):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise DataError(f"preprocess option {key}={value!r} is not a boolean; use {key}=true or {key}=false")


@dataclass(frozen=True)
class ImagePreprocess:
    """How images become model input.

    Steps: decode (RGB, or grayscale), ``resize`` (an int resizes the shorter side keeping
    the aspect ratio, like torchvision's ``Resize(int)``; ``(h, w)`` resizes exactly;
    bilinear), ``center_crop`` (int or ``(h, w)``), ``channel_order``, then by ``dtype``:
    ``float32`` -> ``(pixel * scale - mean) / std``; ``uint8`` -> raw pixels 0..255;
    ``int8`` -> pixel - 128 (TFLite-style int8 input). ``mean``/``std`` have 1 value or one
    per channel. ``layout`` places the channel axis.

    ``None`` means "from the model": ``layout`` from where the model's channel dim (1 or 3)
    is, ``dtype`` from the model input dtype (float -> float32, uint8, int8), ``grayscale``
    when the model has 1 channel.
    """

    resize: _SizeSpec = None
    center_crop: _SizeSpec = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"
    layout: str | None = None
    dtype: str | None = None
    scale: float = 1 / 255
    grayscale: bool | None = None

    _KEYS = {
        "resize": "resize",
        "crop": "center_crop",
        "center_crop": "center_crop",
        "mean": "mean",
        "std": "std",
        "order": "channel_order",
        "channel_order": "channel_order",
        "layout": "layout",
        "dtype": "dtype",
        "scale": "scale",
        "grayscale": "grayscale",
        "gray": "grayscale",
    }

    def __post_init__(self) -> None:
        for name in ("resize", "center_crop"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                value = tuple(int(v) for v in value)
                ok = len(value) == 2 and all(v > 0 for v in value)
            else:
                ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0
                value = int(value) if ok else value
            if not ok:
                raise DataError(f"preprocess {name}={value!r} is not a size; use a positive int or (height, width)")
            object.__setattr__(self, name, value)
        for name in ("mean", "std"):
            value = getattr(self, name)
            value = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
            if len(value) not in (1, 3):
                raise DataError(f"preprocess {name} has {len(value)} values; give 1 value or one per channel")
            object.__setattr__(self, name, value)
        if any(s == 0 for s in self.std):
            raise DataError(f"preprocess std={':'.join(map(str, self.std))} contains 0; std values must be non-zero")
        order = str(self.channel_order).upper()
        if order not in ("RGB", "BGR"):
            raise DataError(f"preprocess channel order {self.channel_order!r} is not supported; use RGB or BGR")
        object.__setattr__(self, "channel_order", order)
        if self.layout is not None:
            layout = str(self.layout).upper()
            if layout not in ("NCHW", "NHWC"):
                raise DataError(f"preprocess layout {self.layout!r} is not supported; use NCHW or NHWC")
            object.__setattr__(self, "layout", layout)
        if self.dtype is not None:
            dtype = str(np.dtype(self.dtype)) if not isinstance(self.dtype, str) else self.dtype.lower()
            if dtype not in ("float32", "uint8", "int8"):
                raise DataError(f"preprocess dtype {self.dtype!r} is not supported; use float32, uint8 or int8")
            object.__setattr__(self, "dtype", dtype)
            if dtype != "float32" and (self.mean != (0.0,) or self.std != (1.0,) or self.scale != 1 / 255):
                raise DataError(
                    f"preprocess dtype={dtype} feeds raw pixels, so mean/std/scale do not apply; "
                    "drop them or use dtype=float32"
                )
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def parse(cls, text: str) -> ImagePreprocess:
        """Parse ``"resize=256,crop=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=NCHW,order=RGB"``.

        Keys: resize, crop (center_crop), mean, std, order (channel_order), layout, dtype,
        scale (a number or a fraction such as 1/255), grayscale (gray). Sizes are ``N`` or
        ``HxW``; per-channel values are separated by ``:``.
        """
        kwargs: dict[str, Any] = {}
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if key not in cls._KEYS:
                valid = ", ".join(sorted(cls._KEYS))
                raise DataError(f"unknown preprocess option '{key}' in {text!r}; valid options: {valid}")
            if not sep and key not in ("grayscale", "gray"):
                raise DataError(f"preprocess option '{key}' in {text!r} has no value; write {key}=VALUE")
            name = cls._KEYS[key]
            value = value.strip()
            if name in ("resize", "center_crop"):
                kwargs[name] = _parse_size(key, value)
            elif name in ("mean", "std"):
                kwargs[name] = _parse_floats(key, value)
            elif name == "scale":
                kwargs[name] = _parse_float(key, value)
            elif name == "grayscale":
                kwargs[name] = _parse_bool(key, value)
            else:
                kwargs[name] = value
        return cls(**kwargs)

    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every preprocessed image, if the options fix it."""
        if self.center_crop is not None:
            return _hw(self.center_crop)
        if isinstance(self.resize, tuple):
            return self.resize
        return None


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


class ImageFolderDataset(Dataset):
    """A folder of images (recursive, sorted) for a single-input image model."""

    def __init__(
        self,
        root: str | os.PathLike,
        inputs: Iterable[InputSpec],
        preprocess: ImagePreprocess | None = None,
        files: list[Path] | None = None,
    ) -> None:
        root = Path(root)
        super().__init__(f"image folder '{root}'", inputs)
        self.root = root
        _require_single_input(self.inputs, self.source, "an image folder")
        spec = self.spec = self.inputs[0]
        if spec.rank != 4:
            raise DataError(
                f"{self.source}: image folders feed rank-4 image inputs (NCHW or NHWC), but input '{spec.name}' has "
                f"shape {spec.display_shape()}; save the data as .npz instead"
            )
        pre = preprocess or ImagePreprocess()
        layout = pre.layout or self._infer_layout(spec)
        c_axis = 1 if layout == "NCHW" else 3
        model_c = spec.shape[c_axis]
        grayscale = pre.grayscale if pre.grayscale is not None else (_is_static(model_c) and model_c == 1)
        channels = 1 if grayscale else 3
        if _is_static(model_c) and model_c != channels:
            other = 3 if layout == "NCHW" else 1
            hint = (
                f"set layout={'NHWC' if layout == 'NCHW' else 'NCHW'}"
                if _is_static(spec.shape[other]) and spec.shape[other] == channels
                else ("set grayscale=true" if model_c == 1 else "set grayscale=false" if model_c == 3 else "")
            )
            raise DataError(
                f"{self.source}: input '{spec.name}' has shape {spec.display_shape()}, so with layout {layout} it "
                f"takes {model_c} channel(s), but the images are decoded with {channels}; "
                + (hint or "this model does not take RGB or grayscale images")
            )
        mean_std = [v for v in (pre.mean, pre.std) if len(v) not in (1, channels)]
        if mean_std:
            raise DataError(
                f"{self.source}: preprocess mean/std have {len(mean_std[0])} values but the images have {channels} "
                "channel(s); give 1 value or one per channel"
            )
        if pre.dtype is not None:
            dtype = pre.dtype
        elif spec.dtype == np.uint8 or spec.dtype == np.int8:
            dtype = spec.dtype.name
        else:
            dtype = "float32"
        self.preprocess = pre
        self.layout = layout
        self.grayscale = grayscale
        self.dtype = dtype
        h_axis = 2 if layout == "NCHW" else 1
        self._model_hw = (spec.shape[h_axis], spec.shape[h_axis + 1])
        size = pre.output_size()
        if size is not None and not _dims_match(self._model_hw, size):
            raise DataError(
                f"{self.source}: preprocessing makes {size[0]}x{size[1]} images but input '{spec.name}' has shape "
                f"{spec.display_shape()}; {self._size_hint()}"
            )
        if files is None:
            files = _list_files(root, IMAGE_SUFFIXES)
        if not files:
            raise DataError(
                f"{self.source} contains no samples: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in it"
            )
        self.files = files
        self.num_samples = len(files)
        self.load(files[0])  # decode one image now, to fail before a long run starts
        rel = [p.relative_to(root).parts for p in files]
        if all(len(parts) >= 2 for parts in rel):
            self.class_names: tuple[str, ...] = tuple(sorted({parts[0] for parts in rel}))
            index = {name: i for i, name in enumerate(self.class_names)}
            self._labels: np.ndarray | None = np.array([index[parts[0]] for parts in rel], dtype=np.int64)
        else:
            self.class_names = ()
            self._labels = None

    @staticmethod
    def _infer_layout(spec: InputSpec) -> str:
        c_first, c_last = spec.shape[1], spec.shape[3]
        first = _is_static(c_first) and c_first in (1, 3)
        last = _is_static(c_last) and c_last in (1, 3)
        return "NHWC" if last and not first else "NCHW"

    def _size_hint(self) -> str:
        h, w = self._model_hw
        if _is_static(h) and _is_static(w):
            if h == w:
                return f"add resize={round(h * 256 / 224)},crop={h} (or resize={h}x{w}) to the preprocess options"
            return f"add resize={h}x{w} to the preprocess options"
        return "add resize/crop options to the preprocess options to match the model"

    @property
    def extra_names(self) -> tuple[str, ...]:
        return ("labels",) if self._labels is not None else ()

    def extra_arrays(self, limit: int | None = None) -> dict[str, np.ndarray]:
        if self._labels is None:
            return {}
        if limit is not None:
            limit = _check_positive("sample limit", limit)
        return {"labels": self._labels[:limit].copy()}

    def load(self, path: Path) -> np.ndarray:
        """Decode and preprocess one image: one sample, without the sample axis."""
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError as exc:  # pragma: no cover - pillow is a dependency of the image path only
            raise DataError(
                f"{self.source}: reading images needs Pillow, which is not installed; pip install pillow"
            ) from exc
        pre = self.preprocess
        where = f"{self.source} (image '{path.relative_to(self.root).as_posix()}')"
        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.grayscale else "RGB")
                if pre.resize is not None:
                    if isinstance(pre.resize, int):
                        w, h = img.size
                        short, long_ = (w, h) if w <= h else (h, w)
                        new_long = int(pre.resize * long_ / short)
                        new = (pre.resize, new_long) if w <= h else (new_long, pre.resize)
                    else:
                        new = (pre.resize[1], pre.resize[0])
                    if new != img.size:
                        img = img.resize(new, Image.Resampling.BILINEAR)
                if pre.center_crop is not None:
                    ch, cw = _hw(pre.center_crop)
                    w, h = img.size
                    if ch > h or cw > w:
                        raise DataError(
                            f"{where} is {h}x{w} (HxW), smaller than the {ch}x{cw} center crop; "
                            "add a resize option at least as large as the crop"
                        )
                    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
                    img = img.crop((left, top, left + cw, top + ch))
                arr = np.asarray(img)
        except DataError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{where} cannot be decoded ({exc}); remove or replace the file") from exc
        if arr.ndim == 2:
            arr = arr[:, :, np.newaxis]
        if pre.channel_order == "BGR" and arr.shape[2] == 3:
            arr = arr[:, :, ::-1]
        if not _dims_match(self._model_hw, arr.shape[:2]):
            raise DataError(
                f"{where} is {arr.shape[0]}x{arr.shape[1]} (HxW) after preprocessing but input '{self.spec.name}' "
                f"has shape {self.spec.display_shape()}; {self._size_hint()}"
            )
        if self.dtype == "float32":
            out = arr.astype(np.float32) * np.float32(pre.scale)
            out = (out - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
        elif self.dtype == "int8":
            out = (arr.astype(np.int16) - 128).astype(np.int8)
        else:
            out = arr.astype(np.uint8, copy=False)
        if self.layout == "NCHW":
            out = out.transpose(2, 0, 1)
        return np.ascontiguousarray(out)

    def _chunks(self, chunk_size: int, limit: int | None) -> Iterator[dict[str, np.ndarray]]:
        files = self.files if limit is None else self.files[:limit]
        for path in files:
            arr = self.load(path)[np.newaxis]
            where = f"{self.source} (image '{path.relative_to(self.root).as_posix()}')"
            yield {self.spec.name: _convert(self.spec, arr, where)}
