"""Celery: the app (:mod:`.app`), every Celery setting (:mod:`.settings`), the thin tasks
(:mod:`.tasks`) and the beat scheduler (:mod:`.beat`)."""
