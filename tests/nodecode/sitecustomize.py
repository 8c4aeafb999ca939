"""Put on PYTHONPATH of a draftsync process that must not decode any video (reindex restores signatures
from sidecars): any attempt to compute a signature fails loudly."""

import draftsync.perceptual as _perceptual


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("a video was decoded")


_perceptual.compute = _refuse  # type: ignore[assignment]
