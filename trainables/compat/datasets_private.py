"""The one private API of ``datasets`` qlora-sweep touches, checked on datasets 5.2.

``Dataset._fingerprint`` is the hash datasets keeps of a dataset's content and the transforms
applied to it (what its cache is keyed on). The model card records it for a Hub dataset, to
say which version of the data trained the adapter; ``datasets`` has no public accessor.
"""

from __future__ import annotations

CHECKED_ON = "5.2"


def fingerprint(dataset) -> str | None:
    """The dataset's fingerprint, or None where this ``datasets`` no longer keeps one (the
    card then says nothing rather than failing a promotion)."""
    value = getattr(dataset, "_fingerprint", None)
    return value if isinstance(value, str) else None
