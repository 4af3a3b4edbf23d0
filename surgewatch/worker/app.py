"""The Celery application.  Every Celery setting lives in :mod:`surgewatch.worker.settings`.

Workers and beat find the configuration file through ``SURGEWATCH_CONFIG`` (the CLI sets it), so
``celery -A surgewatch.worker.app worker`` works as well as ``surgewatch worker``.
"""
import logging

from celery import Celery
from celery.signals import setup_logging

from surgewatch import clock, logs
from surgewatch.worker import settings as celery_settings

app = Celery("surgewatch", include=["surgewatch.worker.tasks"])
app.conf.update(celery_settings.from_environment())

if str(app.conf.broker_url).startswith("sqla+"):
    # kombu's SQL transport hands every transport option to SQLAlchemy's create_engine, so its
    # polling interval (1 s by default: slow for the embedded default) can only be set on the class.
    from kombu.transport import sqlalchemy as _sqla_transport

    _sqla_transport.Transport.polling_interval = celery_settings.embedded_polling_interval(clock.speed())


@setup_logging.connect
def _configure_logging(loglevel=None, **_: object) -> None:
    # Our own handler (with secret redaction) instead of Celery's.
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else (loglevel or "INFO")
    logs.setup(str(level))
