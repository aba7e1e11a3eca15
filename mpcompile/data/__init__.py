"""Calibration and evaluation data: open a user's data source and feed it to a model in batches.

``open_dataset(spec, inputs)`` turns whatever the user points at into a :class:`Dataset`
that yields feed dicts ``{input name: array}`` whose first axis is the sample axis,
validated against the model's :class:`InputSpec` list and cast to each input's dtype.

Sources (``open_dataset`` dispatches on the spec)
--------------------------------------------------
``data.npz``
    The default format: one array per model input, keyed by input name, samples on the
    first axis (``np.savez("data.npz", images=x, labels=y)``). Keys that are not model
    inputs (``labels``, ...) are available through :meth:`Dataset.extra_arrays`.
``data.npy``
    One array for a single-input model, samples on the first axis.
``dir/`` of ``.npy`` / ``.npz`` files
    Files are found recursively and taken in sorted order of their relative path. A file
    holds either *one sample* (the sample axis is absent: rank = input rank - 1) or
    *k samples* (the sample axis is present: rank = input rank, k = its first dim). Within
    one ``.npz`` every input must use the same convention. ``.npy`` files need a
    single-input model. Non-input keys of ``.npz`` files are extra arrays (for a
    one-sample file they gain a sample axis) and must be present in every file.
``dir/`` of images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.webp``, ``.tif``)
    Found recursively, sorted, decoded one at a time with Pillow and preprocessed by an
    :class:`ImagePreprocess`. Single-input models with a rank-4 (NCHW or NHWC) input only.
    When every image lies in a sub-folder, the first path component is its class
    (torchvision ``ImageFolder`` convention): ``extra_arrays()["labels"]`` holds the index
    of that class in the sorted class names (:attr:`ImageFolderDataset.class_names`).
``"package.module:function"`` / ``"path/to/file.py:function"`` / a Python callable
    The function is called with no argument (once per pass over the data) and returns an
    iterable of feed dicts (a single dict is accepted as well). In each dict an array of
    the input's rank is a batch; an array of rank - 1 is one sample (a sample axis is
    added). Keys that are not model inputs are an error. The number of samples is unknown
    (``num_samples is None``) until the data has been iterated.

Any rank-(R-1) array of an ``.npz``/``.npy`` file is likewise read as one single sample.

Validation (every source, :mod:`mpcompile.data.specs`) and memory (lazy reading,
:mod:`mpcompile.data.members`) are described in those modules.

Modules
-------
``specs``      :class:`InputSpec`; dims formatting, batch size, shape/dtype checks, casting, fix hints
``members``    lazy readers of ``.npy`` files and ``.npz`` members (memory-mapped or streamed)
``dataset``    the :class:`Dataset` base: batching, sample limits, extra arrays
``arrays``     :class:`NpzDataset`, :class:`NpyDataset`, :class:`ArrayDirectoryDataset`
``images``     :class:`ImagePreprocess`, :class:`ImageFolderDataset`
``callables``  :class:`CallableDataset` and ``module:function`` loading
``dispatch``   :func:`open_dataset`
"""

from mpcompile.data.arrays import ARRAY_SUFFIXES, ArrayDirectoryDataset, NpyDataset, NpzDataset
from mpcompile.data.callables import CallableDataset
from mpcompile.data.dataset import Dataset
from mpcompile.data.dispatch import open_dataset
from mpcompile.data.images import IMAGE_SUFFIXES, ImageFolderDataset, ImagePreprocess
from mpcompile.data.model import model_inputs, open_data
from mpcompile.data.specs import InputSpec, effective_batch_size

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "ArrayDirectoryDataset",
    "CallableDataset",
    "Dataset",
    "ImageFolderDataset",
    "ImagePreprocess",
    "InputSpec",
    "NpyDataset",
    "NpzDataset",
    "effective_batch_size",
    "model_inputs",
    "open_data",
    "open_dataset",
]
