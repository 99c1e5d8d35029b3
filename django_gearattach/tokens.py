"""The documented import path of :mod:`django_gearattach.web.tokens`:

``from django_gearattach.tokens import token_for, check_token, TokenRefused``
"""

from .web.tokens import TokenRefused, check_token, token_for

__all__ = ["TokenRefused", "check_token", "token_for"]
