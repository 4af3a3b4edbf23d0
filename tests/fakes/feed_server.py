"""The local RSS/Atom server for tests; it ships in the package (``surgewatch demo`` uses it), so
this module only re-exports it."""
from surgewatch.demo.feedserver import FeedServer, RecordedRequest, Route, render_atom, render_rss, wait_for

__all__ = ["FeedServer", "RecordedRequest", "Route", "render_atom", "render_rss", "wait_for"]
