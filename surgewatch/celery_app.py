"""The Celery application.  Every Celery setting lives in :mod:`surgewatch.celery_settings`.

Workers and beat find the configuration file through ``SURGEWATCH_CONFIG`` (the CLI sets it), so
``celery -A surgewatch.celery_app worker`` works as well as ``surgewatch worker``.
"""
import logging

from celery import Celery
from celery.signals import setup_logging

from surgewatch import celery_settings, logs

app = Celery("surgewatch", include=["surgewatch.tasks"])
app.conf.update(celery_settings.from_environment())


@setup_logging.connect
def _configure_logging(loglevel=None, **_: object) -> None:
    # Our own handler (with secret redaction) instead of Celery's.
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else (loglevel or "INFO")
    logs.setup(str(level))
