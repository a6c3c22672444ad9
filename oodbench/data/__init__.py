"""Data: every loader returns an :class:`~oodbench.data.base.ImageSet` (pixels, official indices, provenance).

Import the modules you need (``oodbench.data.base``, ``oodbench.data.files``, ...): this package imports nothing, so
the file helpers the result store uses load without torch."""
