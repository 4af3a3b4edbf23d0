"""The fake Slack Web API for tests.  It lives in the package (``surgewatch.fakeslack``) so that
``surgewatch demo`` can point the real Slack channel at it too; tests import it from here."""
from surgewatch.fakeslack import FakeSlack, SlackCall, channel_id_for, validate_blocks

__all__ = ["FakeSlack", "SlackCall", "channel_id_for", "validate_blocks"]
