"""videomosaic: rebuild videos out of thousands of small photos.

The package is organised by concept: ``config`` (options), ``cache`` (digests, atomic
writes), ``corpus`` (scanning and decoding images into tiles), ``features`` (tile
descriptors), ``index`` (clustering, pruning, the on-disk tile index), ``stages`` (the
resumable jobs) and ``cli`` (the ``mosaic`` command).
"""

__version__ = "0.1.0"
