"""videomosaic: rebuild videos out of thousands of small photos.

One module per concept, in four layers that import only downwards (checked by
import-linter, ``make lint``): ``cli*`` (the ``mosaic`` command), ``stages`` (the
resumable jobs), the engines (``plan``, ``paint``, ``photo``, ``index``...) and the
primitives (``config``, ``cache``, ``video``, ``encode``, ``tone``...). The map is
``docs/architecture.md``.
"""

__version__ = "0.1.0"
