"""The admin dashboard: what the job table and gearmand say about the last hour and day.

:mod:`.queries` reads the job table (a fixed number of indexed queries whatever its
size), :mod:`.charts` draws inline SVG on the server, :mod:`.views` serves the admin
page and its panels, and :mod:`.live` pushes fresh panels to open pages over a
websocket, one refresh per process shared by every page, as the job widget's hub does.
"""
