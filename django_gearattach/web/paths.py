"""Where the browser finds the app: the websocket path, kept apart from the routes.

The template tag and the dashboard need the path only; importing
:mod:`django_gearattach.routing` would import the consumers (and channels) into every
process that renders a page.
"""

from __future__ import annotations

#: The path the widget connects to (below the site's script prefix).
WEBSOCKET_PATH = "ws/gearattach/"
