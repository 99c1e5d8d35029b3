"""The documented import path of :mod:`django_gearattach.web.decorators`:

``from django_gearattach.decorators import offload, OffloadMixin``
"""

from .web.decorators import OffloadMixin, offload

__all__ = ["OffloadMixin", "offload"]
